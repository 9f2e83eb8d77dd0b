"""The benchmark's S3 stand-in (moto's S3 app under granian) is a working S3 that keeps
connections open, unlike ``moto_server``, which closes every one."""

from __future__ import annotations

import http.client
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.storage import S3BlobStore
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]


def test_keepalive_moto_is_s3_over_persistent_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.moto_s3", "--port", str(port)], cwd=ROOT)
    try:
        store = S3BlobStore("keepalive", endpoint_url=f"http://127.0.0.1:{port}")
        for attempt in range(100):
            try:
                store.ensure_bucket()
                break
            except Exception:
                if attempt == 99:
                    raise
                time.sleep(0.1)
        body = b"\x89PNG not really"
        put = store.put("a/b.png", body, content_type="image/png", metadata={"shot-id": "7"})
        copied = store.copy("a/b.png", "c/d.png", "image/png", {"shot-id": "7"})
        assert store.get("c/d.png") == body and copied.sha256 == put.sha256

        url = store.client.generate_presigned_url(
            "get_object", Params={"Bucket": "keepalive", "Key": "a/b.png"}
        )
        path = url.split(f":{port}", 1)[1]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for _ in range(2):  # the second request goes over the same socket
            conn.request("GET", path)
            resp = conn.getresponse()
            assert resp.status == 200 and resp.read() == body
            assert not resp.will_close
        conn.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
