"""Blob storage behind one small interface: a local folder (embedded default) or S3.

Keys are content-addressed (``.../<sha256>.<ext>``) and built only from sanitized
parts, so catalog text such as a SKU ``../../etc/passwd`` can never leave its prefix.
Writes are atomic: a local write goes to a temp file in the target folder and is
renamed over the key; an S3 write sends ``ChecksumSHA256`` so S3 refuses a body that
was corrupted in transit. Vendor errors surface as ``StorageError`` or
``FileNotFoundError`` so callers never import boto3 or catch ``OSError`` variants.
Rows store backend, key, sha256 and size, never URLs.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import mimetypes
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pipeline.digests import sha256_bytes
from pipeline.files import atomic_write_bytes

if TYPE_CHECKING:
    from pipeline.settings import Settings

_SAFE_PART = re.compile(r"[^A-Za-z0-9._-]+")
_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")
_MAX_PART = 100
# Device names Windows reserves in any folder, with any extension and in any case
# ("con.txt" is the console too): a blob tree copied to Windows must not hold them.
_WINDOWS_RESERVED = re.compile(r"^(?:con|prn|aux|nul|com[0-9]|lpt[0-9])(?:\..*)?$", re.IGNORECASE)
# Sidecar metadata for local blobs lives beside the data under a name no key can take
# (key segments never start with a dot).
_META_DIR = ".meta"


class StorageError(Exception):
    """A blob operation failed for a reason other than a missing key."""

    # Worth a retry (a 5xx, a dropped connection); PermanentStorageError says otherwise.
    transient: bool = True


class PermanentStorageError(StorageError):
    """A blob operation that will fail the same way however often it is retried: the bucket
    does not exist, access is denied, the credentials are missing or wrong. Callers fail the
    row with this reason instead of retrying (a retry only hides it in a worker log)."""

    transient = False


class InvalidKeyError(StorageError, ValueError):
    """A key that is not a relative path of sanitized segments."""


@dataclass(frozen=True)
class BlobInfo:
    backend: str
    bucket: str | None
    key: str
    sha256: str
    size: int
    etag: str | None
    content_type: str


@runtime_checkable
class BlobStore(Protocol):
    backend: str

    def put(
        self,
        key: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
    ) -> BlobInfo: ...

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def stat(self, key: str) -> BlobInfo: ...

    def delete(self, key: str) -> None: ...

    def url(self, key: str) -> str: ...

    def copy(
        self,
        src: str,
        dst: str,
        content_type: str,
        metadata: dict[str, str] | None = None,
        src_info: BlobInfo | None = None,
    ) -> BlobInfo:
        """Copy ``src`` to ``dst`` (server-side where the backend can); returns ``dst``'s info.

        ``src_info`` (what the caller already recorded about ``src``) saves a stat round trip.
        """
        ...


def sanitize_part(text: str) -> str:
    """One safe key segment from untrusted text.

    Anything outside ``[A-Za-z0-9._-]`` becomes ``_`` and a leading dot is replaced, so
    ``..``, ``/`` and ``\\`` cannot survive; Windows device names (``CON``, ``aux.txt``,
    ``LPT1``...) get a leading ``_`` and trailing dots go (Windows drops them, merging
    names). When the text had to change (or was cut to 100 characters) a short hash of
    the original is appended: ``a/b`` and ``a_b`` stay distinct keys instead of silently
    sharing one.
    """
    cleaned = _SAFE_PART.sub("_", text).strip("_")
    cleaned = re.sub(r"^\.+", "_", cleaned).rstrip(".")
    if _WINDOWS_RESERVED.match(cleaned):
        cleaned = f"_{cleaned}"
    if cleaned == text and 0 < len(text) <= _MAX_PART:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{(cleaned or 'x')[: _MAX_PART - 11]}-{digest}"


def content_key(*parts: str, sha256: str, ext: str) -> str:
    """``p1/p2/.../<sha256>.<ext>`` with every part sanitized."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise InvalidKeyError(f"not a sha256 hex digest: {sha256!r}")
    ext = ext.lstrip(".").lower()
    if not re.fullmatch(r"[a-z0-9]{1,10}", ext):
        raise InvalidKeyError(f"bad file extension: {ext!r}")
    return "/".join([*(sanitize_part(p) for p in parts), f"{sha256}.{ext}"])


def check_key(key: str) -> str:
    """Refuse anything but ``seg/seg/...`` with safe segments (no ``..``, no absolute paths)."""
    segments = key.split("/")
    if not key or any(not _SAFE_SEGMENT.match(s) for s in segments):
        raise InvalidKeyError(f"unsafe blob key: {key!r}")
    return key


def _guess_type(key: str) -> str:
    return mimetypes.guess_type(key)[0] or "application/octet-stream"


class LocalBlobStore:
    """Blobs as files under ``root``; the embedded default (``./var/blobs``)."""

    backend = "local"

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        # check_key already forbids escapes; this guards against symlinks inside root.
        if not path.is_relative_to(self.root):
            raise InvalidKeyError(f"blob key escapes the store: {key!r}")
        return path

    def _meta_path(self, key: str) -> Path:
        return self.root / _META_DIR / f"{check_key(key)}.json"

    def put(
        self,
        key: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
    ) -> BlobInfo:
        path = self._path(key)
        digest = sha256_bytes(data)
        meta = {"content_type": content_type, "sha256": digest, "metadata": metadata or {}}
        try:
            atomic_write_bytes(path, data)
            atomic_write_bytes(self._meta_path(key), json.dumps(meta).encode())
        except OSError as exc:
            raise StorageError(f"cannot write blob {key!r}: {exc}") from exc
        return BlobInfo(self.backend, None, key, digest, len(data), None, content_type)

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"no blob {key!r} in {self.root}") from None
        except OSError as exc:
            raise StorageError(f"cannot read blob {key!r}: {exc}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def stat(self, key: str) -> BlobInfo:
        data = self.get(key)
        content_type = _guess_type(key)
        with contextlib.suppress(OSError, ValueError):
            content_type = json.loads(self._meta_path(key).read_text())["content_type"]
        return BlobInfo(self.backend, None, key, sha256_bytes(data), len(data), None, content_type)

    def delete(self, key: str) -> None:
        """Remove the blob; deleting a missing key is not an error (same as S3)."""
        try:
            self._path(key).unlink(missing_ok=True)
            self._meta_path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot delete blob {key!r}: {exc}") from exc

    def url(self, key: str) -> str:
        return self._path(key).as_uri()

    def copy(
        self,
        src: str,
        dst: str,
        content_type: str,
        metadata: dict[str, str] | None = None,
        src_info: BlobInfo | None = None,
    ) -> BlobInfo:
        return self.put(dst, self.get(src), content_type=content_type, metadata=metadata)


_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
# Error codes no retry will change: a missing bucket, refused access, bad or expired
# credentials, a bucket in another region (a wrong endpoint), a disabled account.
_PERMANENT_CODES = frozenset(
    {
        "NoSuchBucket",
        "AccessDenied",
        "AllAccessDisabled",
        "AccountProblem",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidBucketName",
        "ExpiredToken",
        "InvalidToken",
        "InvalidSecurity",
        "PermanentRedirect",
        "403",
        "Forbidden",
        "301",
    }
)


def _permanent_client_error(exc: Exception) -> bool:
    from botocore.exceptions import (
        ClientError,
        NoCredentialsError,
        ParamValidationError,
        PartialCredentialsError,
    )

    if isinstance(exc, NoCredentialsError | PartialCredentialsError | ParamValidationError):
        return True
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "")) in _PERMANENT_CODES
    return False


def s3_error(exc: Exception, op: str, bucket: str, key: str) -> Exception:
    """An S3 (botocore) error as ours: ``FileNotFoundError`` for a missing object,
    ``PermanentStorageError`` for a missing bucket, refused access or bad credentials (a
    retry cannot help), ``StorageError`` (transient) for the rest. Every S3 caller maps its
    errors here."""
    from botocore.exceptions import ClientError

    code = ""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code == "NoSuchBucket":
            return PermanentStorageError(f"s3 bucket {bucket!r} does not exist (NoSuchBucket)")
        if code in _NOT_FOUND_CODES:
            return FileNotFoundError(f"no object s3://{bucket}/{key}")
    kind = PermanentStorageError if _permanent_client_error(exc) else StorageError
    detail = f"{code} {exc}" if code else str(exc)
    return kind(f"s3 {op} {bucket}/{key} failed: {detail}")


class S3BlobStore:
    """Blobs in an S3 bucket (AWS, MinIO, moto...), under an optional key prefix."""

    backend = "s3"

    def __init__(
        self,
        bucket: str,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        prefix: str = "",
        client: Any = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = check_key(prefix.strip("/")) + "/" if prefix.strip("/") else ""
        if client is None:
            from pipeline.s3 import s3_client

            client = s3_client(endpoint_url, region)
        self.client = client

    def _full(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _error(self, exc: Exception, op: str, key: str) -> Exception:
        return s3_error(exc, op, self.bucket, self._full(key))

    def _call(self, op: str, key: str, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.bucket, Key=self._full(key), **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, op, key) from exc

    def check_bucket(self) -> None:
        """Raise ``PermanentStorageError`` when the bucket is missing or refused to us (one
        HEAD request), ``StorageError`` when the endpoint cannot be reached at all."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in {"404", "NoSuchBucket", "NotFound"}:
                raise PermanentStorageError(
                    f"s3 bucket {self.bucket!r} does not exist (NoSuchBucket)"
                ) from exc
            kind = PermanentStorageError if _permanent_client_error(exc) else StorageError
            raise kind(f"s3 bucket {self.bucket!r}: {code} {exc}") from exc
        except BotoCoreError as exc:
            kind = PermanentStorageError if _permanent_client_error(exc) else StorageError
            raise kind(f"s3 bucket {self.bucket!r}: {exc}") from exc

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist (demo, tests, a fresh MinIO)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError:
            pass
        except BotoCoreError as exc:
            raise StorageError(f"s3 bucket {self.bucket}: {exc}") from exc
        try:
            self.client.create_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"cannot create s3 bucket {self.bucket}: {exc}") from exc

    def put(
        self,
        key: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
    ) -> BlobInfo:
        raw = hashlib.sha256(data).digest()
        digest = raw.hex()
        meta = {**(metadata or {}), "sha256": digest}
        resp = self._call(
            "put",
            key,
            self.client.put_object,
            Body=data,
            ContentType=content_type,
            Metadata=meta,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=base64.b64encode(raw).decode(),
        )
        etag = str(resp.get("ETag", "")).strip('"') or None
        return BlobInfo(self.backend, self.bucket, key, digest, len(data), etag, content_type)

    def get(self, key: str) -> bytes:
        resp = self._call("get", key, self.client.get_object)
        try:
            return bytes(resp["Body"].read())
        except Exception as exc:  # a dropped connection mid-body
            raise StorageError(f"s3 get {self.bucket}/{self._full(key)}: {exc}") from exc

    def exists(self, key: str) -> bool:
        try:
            self._call("head", key, self.client.head_object)
        except FileNotFoundError:
            return False
        return True

    def stat(self, key: str) -> BlobInfo:
        head = self._call("head", key, self.client.head_object, ChecksumMode="ENABLED")
        digest = (head.get("Metadata") or {}).get("sha256")
        if not digest and head.get("ChecksumSHA256"):
            digest = base64.b64decode(head["ChecksumSHA256"]).hex()
        return BlobInfo(
            self.backend,
            self.bucket,
            key,
            digest or "",
            int(head["ContentLength"]),
            str(head.get("ETag", "")).strip('"') or None,
            head.get("ContentType") or _guess_type(key),
        )

    def delete(self, key: str) -> None:
        self._call("delete", key, self.client.delete_object)

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._full(key)}"

    def copy(
        self,
        src: str,
        dst: str,
        content_type: str,
        metadata: dict[str, str] | None = None,
        src_info: BlobInfo | None = None,
    ) -> BlobInfo:
        """Server-side CopyObject: one request, no bytes through this process. S3 recomputes
        the SHA-256 checksum, so the returned digest is the stored object's, not our claim."""
        if src_info is None:
            src_info = self.stat(src)
        digest = src_info.sha256
        resp = self._call(
            "copy",
            dst,
            self.client.copy_object,
            CopySource={"Bucket": self.bucket, "Key": self._full(src)},
            MetadataDirective="REPLACE",
            ContentType=content_type,
            Metadata={**(metadata or {}), "sha256": digest},
            ChecksumAlgorithm="SHA256",
        )
        result = resp.get("CopyObjectResult", {})
        checksum = result.get("ChecksumSHA256")
        if checksum:
            digest = base64.b64decode(checksum).hex()
        etag = str(result.get("ETag", "")).strip('"') or None
        return BlobInfo(self.backend, self.bucket, dst, digest, src_info.size, etag, content_type)


PROBE_PREFIX = "_shotline-probe"


def probe_store(store: BlobStore, token: str) -> None:
    """Put, read back and delete one small blob: the store is writable by us. Raises
    ``StorageError`` (``PermanentStorageError`` for a missing bucket or refused access)."""
    key = f"{PROBE_PREFIX}/{sanitize_part(token)}.txt"
    body = f"shotline doctor probe {token}\n".encode()
    store.put(key, body, content_type="text/plain")
    try:
        got = store.get(key)
    except FileNotFoundError as exc:
        raise StorageError(f"probe blob {key!r} vanished right after it was written") from exc
    finally:
        store.delete(key)
    if got != body:
        raise StorageError(f"probe blob {key!r} read back different bytes")


def make_blob_store(settings: Settings) -> BlobStore:
    if settings.blob_backend == "s3":
        return S3BlobStore(
            settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            prefix=settings.s3_prefix,
        )
    return LocalBlobStore(settings.blob_root)
