"""One contract suite for every BlobStore backend: local folder and S3 (moto server, real HTTP)."""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from pipeline.settings import Settings
from pipeline.storage import (
    BlobStore,
    InvalidKeyError,
    LocalBlobStore,
    S3BlobStore,
    StorageError,
    check_key,
    content_key,
    make_blob_store,
    sanitize_part,
    sha256_bytes,
)

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def _client(endpoint: str) -> object:
    cfg = Config(region_name="us-east-1", s3={"addressing_style": "path"})
    return boto3.client("s3", endpoint_url=endpoint, config=cfg)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "blobs")
        return
    endpoint = request.getfixturevalue("moto_server")
    bucket = f"shotline-{uuid.uuid4().hex[:12]}"
    s3 = S3BlobStore(bucket, endpoint_url=endpoint, prefix="tenant/prod")
    s3.ensure_bucket()
    yield s3


def _key(sku: str = "SKU-1", ext: str = "png", data: bytes = PNG) -> str:
    return content_key("acme", sku, "hero_white", sha256=sha256_bytes(data), ext=ext)


# --- contract: every backend ---------------------------------------------------------


def test_put_get_stat_roundtrip(store: BlobStore) -> None:
    key = _key()
    info = store.put(key, PNG, content_type="image/png", metadata={"shot": "7"})
    assert info.backend == store.backend
    assert info.key == key
    assert info.sha256 == hashlib.sha256(PNG).hexdigest()
    assert info.size == len(PNG)
    assert info.content_type == "image/png"
    assert store.get(key) == PNG
    assert store.exists(key)
    st = store.stat(key)
    assert (st.sha256, st.size, st.content_type) == (info.sha256, info.size, "image/png")
    assert st.etag == info.etag


def test_overwrite_replaces_content(store: BlobStore) -> None:
    key = "raw/acme/sku/t/x.bin"
    store.put(key, b"first")
    store.put(key, b"second version")
    assert store.get(key) == b"second version"
    assert store.stat(key).size == len(b"second version")


def test_missing_key_is_file_not_found(store: BlobStore) -> None:
    key = _key("never-written")
    assert not store.exists(key)
    with pytest.raises(FileNotFoundError):
        store.get(key)
    with pytest.raises(FileNotFoundError):
        store.stat(key)


def test_copy_duplicates_bytes_with_new_type_and_metadata(store: BlobStore) -> None:
    src, dst = _key("copy-src"), _key("copy-dst")
    store.put(src, PNG, content_type="application/octet-stream")
    info = store.copy(src, dst, "image/png", {"shot-id": "9"})
    assert (info.key, info.sha256, info.size) == (dst, hashlib.sha256(PNG).hexdigest(), len(PNG))
    assert store.get(dst) == PNG and store.get(src) == PNG
    assert store.stat(dst).content_type == "image/png"
    # A caller that already knows the source (publish does) skips the stat round trip.
    again = store.copy(src, _key("copy-dst2"), "image/png", src_info=store.stat(src))
    assert (again.sha256, again.size) == (info.sha256, info.size)
    with pytest.raises(FileNotFoundError):
        store.copy(_key("copy-missing"), _key("copy-nowhere"), "image/png")


def test_delete_removes_and_is_idempotent(store: BlobStore) -> None:
    key = _key("to-delete")
    store.put(key, PNG)
    store.delete(key)
    assert not store.exists(key)
    store.delete(key)  # deleting again is not an error, like S3
    with pytest.raises(FileNotFoundError):
        store.get(key)


@pytest.mark.parametrize("sku", ["../../etc/passwd", "a/b", "..", ".hidden", "a\\b", "", "é ü"])
def test_hostile_skus_stay_inside_their_prefix(store: BlobStore, sku: str) -> None:
    key = _key(sku)
    parts = key.split("/")
    assert len(parts) == 4, key  # brand / sku / template / file: the SKU is one segment
    assert parts[0] == "acme" and parts[2] == "hero_white"
    assert ".." not in parts and not parts[1].startswith(".")
    store.put(key, PNG)
    assert store.get(key) == PNG
    if isinstance(store, LocalBlobStore):
        written = [p for p in store.root.rglob("*") if p.is_file() and ".meta" not in p.parts]
        assert written == [store.root / key]
    else:
        assert isinstance(store, S3BlobStore)
        listed = store.client.list_objects_v2(Bucket=store.bucket)
        assert [o["Key"] for o in listed["Contents"]] == [f"tenant/prod/{key}"]


@pytest.mark.parametrize(
    "key", ["../x.png", "/etc/passwd", "a/../../b", "a//b", "a/./b", "", "a/.meta/b", "a\\..\\b"]
)
def test_unsafe_raw_keys_are_refused(store: BlobStore, key: str) -> None:
    with pytest.raises(InvalidKeyError):
        store.put(key, b"x")
    with pytest.raises(InvalidKeyError):
        store.get(key)


def test_url_names_the_object(store: BlobStore) -> None:
    key = _key()
    url = store.url(key)
    assert url.endswith(key)
    assert url.startswith("file://" if store.backend == "local" else "s3://")


# --- sanitizing ------------------------------------------------------------------------


def test_sanitize_part_keeps_safe_text_and_disambiguates_changed_text() -> None:
    assert sanitize_part("SKU-123_a.b") == "SKU-123_a.b"
    assert sanitize_part("a/b") != sanitize_part("a_b")
    assert sanitize_part("a/b").startswith("a_b-")
    assert sanitize_part("a/b") == sanitize_part("a/b")  # deterministic
    long = sanitize_part("x" * 500)
    assert len(long) <= 100 and long != sanitize_part("x" * 501)
    for hostile in ["../../etc/passwd", "..", ".", "", "/", "{{ 7*7 }}"]:
        assert check_key(sanitize_part(hostile))


def test_content_key_shape_and_validation() -> None:
    digest = sha256_bytes(b"img")
    assert content_key("raw", "acme", "S1", "hero", sha256=digest, ext=".PNG") == (
        f"raw/acme/S1/hero/{digest}.png"
    )
    with pytest.raises(InvalidKeyError):
        content_key("a", sha256="not-a-digest", ext="png")
    with pytest.raises(InvalidKeyError):
        content_key("a", sha256=digest, ext="../png")


# --- local backend: atomic writes ------------------------------------------------------


def test_local_write_is_atomic_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    key = "raw/acme/sku/hero/a.bin"
    store.put(key, b"old")

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(StorageError, match="disk full"):
        store.put(key, b"new content that never lands")
    monkeypatch.undo()
    assert store.get(key) == b"old"  # the old file is intact, never half-written
    leftovers = [p.name for p in (tmp_path / "blobs").rglob(".tmp-*")]
    assert leftovers == []


def test_local_write_goes_through_a_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    seen: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        seen.append((str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    store.put("a/b.bin", b"data")
    src, dst = seen[0]
    assert Path(src).name.startswith(".tmp-") and Path(src).parent == Path(dst).parent
    assert dst == str(store.root / "a/b.bin")


# --- S3 backend: checksums and error mapping ------------------------------------------


def test_s3_put_sends_sha256_checksum(moto_server: str) -> None:
    bucket = f"ck-{uuid.uuid4().hex[:12]}"
    store = S3BlobStore(bucket, endpoint_url=moto_server)
    store.ensure_bucket()
    sent: list[dict[str, object]] = []
    store.client.meta.events.register(
        "before-call.s3.PutObject", lambda params, **_: sent.append(dict(params["headers"]))
    )
    store.put("k/blob.bin", PNG)
    expected = base64.b64encode(hashlib.sha256(PNG).digest()).decode()
    assert sent and sent[0]["x-amz-checksum-sha256"] == expected
    head = store.client.head_object(Bucket=bucket, Key="k/blob.bin", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == expected


def test_s3_put_sends_the_body_without_waiting_for_100_continue(moto_server: str) -> None:
    store = S3BlobStore(f"ex-{uuid.uuid4().hex[:12]}", endpoint_url=moto_server)
    store.ensure_bucket()
    sent: list[dict[str, object]] = []
    store.client.meta.events.register(
        "before-send.s3.PutObject", lambda request, **_: sent.append(dict(request.headers))
    )
    store.put("k/blob.bin", PNG)
    assert sent and "Expect" not in sent[0]
    assert store.get("k/blob.bin") == PNG


def test_s3_rejected_checksum_maps_to_storage_error(moto_server: str) -> None:
    """S3 answers BadDigest when the body does not match ChecksumSHA256 (moto does not check,
    so the vendor answer is stubbed); callers only ever see StorageError."""
    from botocore.stub import Stubber

    store = S3BlobStore("stubbed", endpoint_url=moto_server)
    with Stubber(store.client) as stub:
        stub.add_client_error("put_object", service_error_code="BadDigest", http_status_code=400)
        with pytest.raises(StorageError, match="BadDigest"):
            store.put("k/blob.bin", PNG)
        stub.add_client_error("get_object", service_error_code="NoSuchKey", http_status_code=404)
        with pytest.raises(FileNotFoundError):
            store.get("k/blob.bin")
        stub.add_client_error("get_object", service_error_code="AccessDenied", http_status_code=403)
        with pytest.raises(StorageError, match="AccessDenied"):
            store.get("k/blob.bin")


def test_s3_missing_bucket_and_unreachable_endpoint_are_storage_errors(moto_server: str) -> None:
    store = S3BlobStore(f"nope-{uuid.uuid4().hex[:12]}", endpoint_url=moto_server)
    with pytest.raises(StorageError, match="NoSuchBucket"):
        store.put("k/x.bin", b"x")
    client = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:9",
        config=Config(region_name="us-east-1", retries={"max_attempts": 1}, connect_timeout=1),
    )
    dead = S3BlobStore("b", client=client)
    with pytest.raises(StorageError):
        dead.get("k/x.bin")


def test_make_blob_store_follows_settings(tmp_path: Path, moto_server: str) -> None:
    local = make_blob_store(Settings(_env_file=None, blob_root=tmp_path / "b"))  # type: ignore[call-arg]
    assert isinstance(local, LocalBlobStore) and local.root == (tmp_path / "b").resolve()
    s3 = make_blob_store(
        Settings(  # type: ignore[call-arg]
            _env_file=None,
            blob_backend="s3",
            s3_bucket="from-settings",
            s3_endpoint_url=moto_server,
            s3_prefix="/p/",
        )
    )
    assert isinstance(s3, S3BlobStore)
    assert (s3.bucket, s3.prefix) == ("from-settings", "p/")
    s3.ensure_bucket()
    s3.put("a/b.txt", b"hi", content_type="text/plain")
    assert (
        _client(moto_server).get_object(Bucket="from-settings", Key="p/a/b.txt")["Body"].read()
        == b"hi"
    )
