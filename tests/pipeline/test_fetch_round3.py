"""Issue 31 on the fetch stage: a slow drip ends at the total deadline, the host allow-list
takes ``host:port`` entries, and ``s3://`` sources come only from allowed buckets."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pipeline.settings import Settings
from pipeline.sources.addresses import host_allowed
from pipeline.sources.fetch import FetchError, FetchPolicy, allowed_s3_buckets, fetch
from tests.image_server import image_server


def _drip(head: bytes, drip: bytes) -> Iterator[str]:
    """A server that sends ``head`` at once, then ``drip`` every 0.1 s for 6 s: every read
    gets a byte well inside the read timeout."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)
    stop = threading.Event()

    def serve() -> None:
        lsock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = lsock.accept()
            except OSError:
                continue
            with conn:
                conn.recv(4096)
                conn.sendall(head)
                for _ in range(60):
                    if stop.is_set():
                        break
                    try:
                        conn.sendall(drip)
                    except OSError:
                        break
                    time.sleep(0.1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{lsock.getsockname()[1]}/drip.png"
    finally:
        stop.set()
        thread.join(5)
        lsock.close()


@pytest.fixture
def drip_server() -> Iterator[str]:
    """Headers at once, then the body one byte at a time (no Content-Length, no chunking)."""
    yield from _drip(b"HTTP/1.0 200 OK\r\nContent-Type: image/png\r\n\r\n", b"x")


@pytest.fixture
def header_drip_server() -> Iterator[str]:
    """The status line at once, then one header line after another, never the blank line
    that ends them: ``http.client`` reads headers with no deadline of its own."""
    yield from _drip(b"HTTP/1.0 200 OK\r\n", b"X-Slow: 1\r\n")


def test_header_drip_ends_at_the_total_deadline(header_drip_server: str) -> None:
    policy = FetchPolicy(
        allow_hosts=("127.0.0.1",), read_timeout_s=2.0, connect_timeout_s=1.0, total_timeout_s=1.0
    )
    started = time.monotonic()
    with pytest.raises(FetchError, match="timed out") as err:
        fetch(header_drip_server, policy)
    # Before: the headers ran until the server gave up (6 s here; with 100 header lines of
    # up to 64 KiB allowed, hours against a slow enough drip), whatever the deadline said.
    assert time.monotonic() - started < 2.0
    assert str(err.value).startswith(f"{header_drip_server}: ") and "\n" not in str(err.value)


def test_slow_drip_ends_at_the_total_deadline(drip_server: str) -> None:
    policy = FetchPolicy(
        allow_hosts=("127.0.0.1",), read_timeout_s=2.0, connect_timeout_s=1.0, total_timeout_s=1.0
    )
    started = time.monotonic()
    with pytest.raises(FetchError, match="timed out") as err:
        fetch(drip_server, policy)
    elapsed = time.monotonic() - started
    # Before: read until a 64 KiB chunk filled or the server closed (6 s here, 18 h at the
    # defaults against a 1 byte/s drip), whatever the total deadline said.
    assert elapsed < 2.0, elapsed
    assert str(err.value).startswith(f"{drip_server}: ") and "\n" not in str(err.value)


def test_allow_list_takes_host_port_entries() -> None:
    assert host_allowed("127.0.0.1", ["127.0.0.1"], 5432)  # a bare host: every port
    assert host_allowed("127.0.0.1", ["127.0.0.1:8080"], 8080)
    assert not host_allowed("127.0.0.1", ["127.0.0.1:8080"], 5432)
    assert host_allowed("::1", ["[::1]:8080"], 8080)
    assert not host_allowed("::1", ["[::1]:8080"], 8081)
    assert host_allowed("::1", ["::1"], 22)
    assert not host_allowed("example.com", ["example.com:http"], 80)  # not a port: no match
    # str.isdigit() is true for "²" and "١", int() raises on the one and reads the other:
    # neither is a port (ASCII digits only), and neither raises.
    assert not host_allowed("example.com", ["example.com:²"], 2)
    assert not host_allowed("example.com", ["example.com:١"], 1)
    assert not host_allowed("::1", ["[::1]:²"], 2)


def test_allow_list_port_refuses_other_ports_end_to_end() -> None:
    with image_server() as url:
        port = int(url.rsplit(":", 1)[1])
        ok = FetchPolicy(allow_hosts=(f"127.0.0.1:{port}",), read_timeout_s=2.0)
        assert fetch(f"{url}/ok.png", ok).data
        other = FetchPolicy(allow_hosts=(f"127.0.0.1:{port + 1}",), read_timeout_s=2.0)
        with pytest.raises(FetchError, match="non-public address"):
            fetch(f"{url}/ok.png", other)


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def get_object(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        raise AssertionError("a refused bucket must not be asked")


def test_s3_sources_only_from_allowed_buckets() -> None:
    client = _Recorder()
    policy = FetchPolicy(s3_buckets=("packshots",))
    messages = set()
    for url in ("s3://private/payroll.png", "s3://no-such-bucket-at-all/x.png"):
        with pytest.raises(FetchError) as err:
            fetch(url, policy, s3_client=client)
        messages.add(str(err.value).removeprefix(f"{url}: "))
    # One message whatever the bucket: nothing about whether it or the key exists.
    assert messages == {"s3:// sources are read only from buckets in SHOTLINE_SOURCE_S3_BUCKETS"}
    assert client.calls == []


def test_allowed_buckets_from_settings() -> None:
    settings = Settings(
        source_s3_buckets="packshots, media",
        ingest_sources=["s3://feeds/acme/", "/srv/drop"],
    )
    assert allowed_s3_buckets(settings) == ("packshots", "media", "feeds")
    assert allowed_s3_buckets(Settings()) == ()
