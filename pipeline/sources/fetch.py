"""Download one source image under a policy; every refusal is one line naming the URL.

Schemes: a local path or ``file://`` URL only under the configured roots (symlinks are
resolved first, so a link cannot point out of them), ``s3://bucket/key`` from an allowed
bucket only (one refusal whether or not the bucket or key exists) through a boto3 client the
caller built once, and ``http(s)://`` through urllib3 with:

- connect and read timeouts, and a deadline for the whole download enforced on every socket
  read: each read waits at most the time left (a server that drips one byte per read timeout
  cannot hold a fetch thread past the deadline), and the body is read one ``recv`` at a time;
- the host resolved once and every address checked (``addresses.resolve_checked``); the
  connection goes to the checked address, with the name in ``Host`` and SNI;
- redirects followed by hand, at most ``max_redirects``, each hop re-checked the same way;
- an ``image/*`` content type, and a size cap on the streamed body (Content-Length is only a
  hint: the body is cut at ``max_bytes + 1``);
- ``If-None-Match`` / ``If-Modified-Since`` from the previous fetch: a 304 is "unchanged".
"""

from __future__ import annotations

import contextlib
import mimetypes
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error

from pipeline.files import InputFileError, read_capped
from pipeline.sources.addresses import AddressRefused, resolve_checked
from pipeline.sources.refs import file_path

if TYPE_CHECKING:
    from pipeline.settings import Settings

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")  # 2+ letters: "C:" is a drive
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 << 10
USER_AGENT = "shotline-source-fetch/1"


class FetchError(ValueError):
    """A source image that cannot be fetched: ``str()`` is ``"<url>: <reason>"``."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"{url}: {reason}")


@dataclass(frozen=True)
class FetchPolicy:
    roots: tuple[Path, ...] = ()
    allow_hosts: tuple[str, ...] = ()
    s3_buckets: tuple[str, ...] = ()  # buckets s3:// sources may name (none: no s3:// sources)
    max_bytes: int = 25 * 1024 * 1024
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 20.0
    total_timeout_s: float = 120.0
    max_redirects: int = 5

    @classmethod
    def from_settings(cls, settings: Settings) -> FetchPolicy:
        return cls(
            roots=tuple(Path(os.path.realpath(r)) for r in settings.source_roots),
            allow_hosts=tuple(settings.source_allow_hosts),
            s3_buckets=allowed_s3_buckets(settings),
            max_bytes=settings.source_max_bytes,
            connect_timeout_s=settings.source_connect_timeout_s,
            read_timeout_s=settings.source_read_timeout_s,
            total_timeout_s=settings.source_total_timeout_s,
            max_redirects=settings.source_max_redirects,
        )


@dataclass(frozen=True)
class Fetched:
    url: str
    data: bytes | None  # None when the server said "not modified"
    content_type: str | None
    etag: str | None = None
    last_modified: str | None = None
    final_url: str | None = None  # after redirects

    @property
    def not_modified(self) -> bool:
        return self.data is None


def allowed_s3_buckets(settings: Settings) -> tuple[str, ...]:
    """``SHOTLINE_SOURCE_S3_BUCKETS`` plus the buckets scheduled ingestion reads catalogs from
    (their relative packshot references resolve into the same bucket)."""
    buckets = list(settings.source_s3_buckets)
    for uri in settings.ingest_sources:
        if uri.lower().startswith("s3://"):
            buckets.append(urlsplit(uri).netloc)
    return tuple(dict.fromkeys(b for b in buckets if b))


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n} bytes"


def fetch(
    url: str,
    policy: FetchPolicy,
    *,
    s3_client: Any = None,
    etag: str | None = None,
    last_modified: str | None = None,
) -> Fetched:
    """The bytes at ``url``; ``FetchError`` with the reason otherwise."""
    scheme = match.group(1).lower() if (match := _SCHEME.match(url)) else ""
    if scheme in ("http", "https"):
        return _fetch_http(url, policy, etag, last_modified)
    if scheme == "s3":
        return _fetch_s3(url, policy, s3_client, etag)
    if scheme in ("file", ""):
        return _fetch_file(url, policy)
    raise FetchError(url, f"unsupported scheme {scheme!r} (use a path, file://, s3:// or https://)")


# --- local files -----------------------------------------------------------------------------


def _fetch_file(url: str, policy: FetchPolicy) -> Fetched:
    try:
        path = file_path(url) if url.startswith("file:") else Path(url)
    except ValueError as exc:
        raise FetchError(url, str(exc).removeprefix(f"{url}: ")) from None
    real = Path(os.path.realpath(path))
    if not any(real.is_relative_to(root) for root in policy.roots):
        roots = ", ".join(str(r) for r in policy.roots) or "none configured"
        raise FetchError(url, f"file is outside the allowed source roots ({roots})")
    try:
        data = read_capped(real, policy.max_bytes, "source image")
    except InputFileError as exc:
        raise FetchError(url, exc.reason) from None
    ctype = mimetypes.guess_type(real.name)[0]
    mtime = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(real.stat().st_mtime))
    return Fetched(url, data, ctype, last_modified=mtime, final_url=url)


# --- S3 --------------------------------------------------------------------------------------


def _fetch_s3(url: str, policy: FetchPolicy, client: Any, etag: str | None) -> Fetched:
    parts = urlsplit(url)
    bucket, key = parts.netloc, parts.path.lstrip("/")
    if not bucket or not key:
        raise FetchError(url, "an s3 URL must be s3://bucket/key")
    if bucket not in policy.s3_buckets:
        # Refused before any request, in words that do not depend on the bucket or the key:
        # a catalog must not learn what the worker's credentials can see.
        raise FetchError(
            url, "s3:// sources are read only from buckets in SHOTLINE_SOURCE_S3_BUCKETS"
        )
    if client is None:
        raise FetchError(url, "no S3 client configured for s3:// sources")
    from botocore.exceptions import BotoCoreError, ClientError

    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if etag:
        kwargs["IfNoneMatch"] = f'"{etag}"'
    try:
        resp = client.get_object(**kwargs)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code == "304":
            return Fetched(url, None, None, etag=etag, final_url=url)
        message = str(exc.response.get("Error", {}).get("Message", "")).strip()
        detail = f"S3 error {code or exc}" + (f": {message}" if message else "")
        raise FetchError(url, detail) from None
    except BotoCoreError as exc:
        raise FetchError(url, f"S3 error: {exc}") from None
    size = int(resp.get("ContentLength") or 0)
    body = resp["Body"]
    try:
        if size > policy.max_bytes:
            raise FetchError(url, f"object is {_mib(size)}; the limit is {_mib(policy.max_bytes)}")
        data = body.read(policy.max_bytes + 1)
    except (BotoCoreError, OSError) as exc:
        raise FetchError(url, f"S3 read failed: {exc}") from None
    finally:
        body.close()
    if len(data) > policy.max_bytes:
        raise FetchError(url, f"object is over the limit of {_mib(policy.max_bytes)}")
    new_etag = str(resp.get("ETag", "")).strip('"') or None
    return Fetched(url, data, resp.get("ContentType"), etag=new_etag, final_url=url)


# --- HTTP ------------------------------------------------------------------------------------


class _Watchdog:
    """Shuts the hop's socket down at the deadline. ``http.client`` reads the status line and
    the headers with one blocking ``recv`` per buffer, each bounded by the read timeout but not
    in total, so a server that drips header bytes could otherwise hold a fetch thread for
    hours; shutting the socket down wakes that ``recv`` wherever it is."""

    def __init__(self, seconds: float) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self.fired = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def watch(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock
            fired = self.fired
        if fired:
            self._shut(sock)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            sock = self._sock
        self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket | None) -> None:
        if sock is not None:
            # Already closed: nothing left to wake.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._timer.cancel()


def _pool(
    scheme: str, address: str, port: int, host: str, timeout: urllib3.Timeout, dog: _Watchdog
) -> urllib3.HTTPConnectionPool:
    pool: urllib3.HTTPConnectionPool
    if scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            address,
            port,
            timeout=timeout,
            retries=False,
            server_hostname=host,
            assert_hostname=host,
            cert_reqs="CERT_REQUIRED",
        )
    else:
        pool = urllib3.HTTPConnectionPool(address, port, timeout=timeout, retries=False)
    base = pool.ConnectionCls

    class Watched(base):  # type: ignore[valid-type,misc]
        """The pool's own connection class, handing its socket to the watchdog once open."""

        def connect(self) -> None:
            super().connect()
            dog.watch(self.sock)

    pool.ConnectionCls = Watched
    return pool


def _fetch_http(
    url: str, policy: FetchPolicy, etag: str | None, last_modified: str | None
) -> Fetched:
    deadline = time.monotonic() + policy.total_timeout_s
    current = url
    for _hop in range(policy.max_redirects + 1):
        left = _time_left(url, policy, deadline)
        # Connecting and waiting for the headers count against the deadline too.
        timeout = urllib3.Timeout(
            connect=min(policy.connect_timeout_s, left), read=min(policy.read_timeout_s, left)
        )
        parts = urlsplit(current)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise FetchError(url, f"redirected to an unsupported scheme: {current}")
        try:
            host, port = parts.hostname, parts.port or (443 if scheme == "https" else 80)
        except ValueError as exc:  # a port that is not a number
            raise FetchError(url, f"bad URL: {exc}") from None
        if not host:
            raise FetchError(url, "the URL has no host")
        via = "" if current == url else f" (redirected to {current})"
        try:
            address = resolve_checked(host, port, policy.allow_hosts)[0]
        except AddressRefused as exc:
            raise FetchError(url, f"{exc}{via}") from None
        headers = {"Host": parts.netloc.rpartition("@")[2], "User-Agent": USER_AGENT}
        headers["Accept"] = "image/*"
        # No compressed bodies: decoding one can take many reads per returned byte, which
        # the per-read deadline could not bound (images are compressed already).
        headers["Accept-Encoding"] = "identity"
        if etag:
            headers["If-None-Match"] = f'"{etag}"'
        if last_modified and not etag:
            headers["If-Modified-Since"] = last_modified
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        dog = _Watchdog(left)
        pool = _pool(scheme, address, port, host, timeout, dog)
        with dog:
            try:
                resp = pool.urlopen(
                    "GET", target, headers=headers, redirect=False, preload_content=False
                )
                try:
                    # A shut-down socket reads as the end of the headers, not as an error.
                    if dog.fired:
                        raise FetchError(url, _overtime(policy))
                    if resp.status in _REDIRECTS:
                        location = resp.headers.get("Location")
                        if not location:
                            raise FetchError(url, f"HTTP {resp.status} without a Location{via}")
                        current = urljoin(current, location)
                        continue
                    return _http_body(url, current, resp, policy, deadline, etag, via)
                finally:
                    resp.release_conn()
            except FetchError:
                raise
            except (Urllib3Error, OSError) as exc:
                if dog.fired or time.monotonic() >= deadline:
                    raise FetchError(url, _overtime(policy)) from None
                raise FetchError(url, f"{_net_reason(exc)}{via}") from None
            finally:
                pool.close()
    raise FetchError(url, f"more than {policy.max_redirects} redirects")


def _overtime(policy: FetchPolicy) -> str:
    return f"timed out: download took over {policy.total_timeout_s:g} s"


def _time_left(url: str, policy: FetchPolicy, deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise FetchError(url, _overtime(policy))
    return left


def _read_by_deadline(url: str, resp: Any, policy: FetchPolicy, deadline: float, via: str) -> bytes:
    """The body, one ``recv`` per read, each waiting at most the time left: a server that
    drips bytes slower than the deadline allows is cut off at the deadline, not after a
    64 KiB buffer fills."""
    sock = getattr(resp.connection, "sock", None)
    chunks: list[bytes] = []
    total = 0
    while True:
        left = _time_left(url, policy, deadline)
        if sock is not None:
            sock.settimeout(min(policy.read_timeout_s, left))
        chunk = resp.read1(_CHUNK, decode_content=False)
        if not chunk:
            break
        total += len(chunk)
        if total > policy.max_bytes:
            raise FetchError(url, f"body is over the limit of {_mib(policy.max_bytes)}{via}")
        chunks.append(chunk)
    _time_left(url, policy, deadline)
    return b"".join(chunks)


def _net_reason(exc: BaseException) -> str:
    name = type(exc).__name__
    if "Timeout" in name:
        return f"timed out ({name})"
    return f"connection failed ({name}: {exc})"


def _http_body(
    url: str,
    current: str,
    resp: Any,
    policy: FetchPolicy,
    deadline: float,
    etag: str | None,
    via: str,
) -> Fetched:
    if resp.status == 304:
        return Fetched(url, None, None, etag=etag, final_url=current)
    if resp.status != 200:
        raise FetchError(url, f"HTTP {resp.status} {resp.reason or ''}".rstrip() + via)
    ctype = (resp.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
    if not ctype.startswith("image/"):
        raise FetchError(url, f"content type {ctype or 'missing'!r} is not image/*{via}")
    declared = resp.headers.get("Content-Length")
    if declared and declared.isascii() and declared.isdigit() and int(declared) > policy.max_bytes:
        raise FetchError(
            url, f"body is {_mib(int(declared))}; the limit is {_mib(policy.max_bytes)}{via}"
        )
    encoding = (resp.headers.get("Content-Encoding") or "identity").strip().lower()
    if encoding != "identity":
        raise FetchError(url, f"content encoding {encoding!r} is not supported{via}")
    data = _read_by_deadline(url, resp, policy, deadline, via)
    new_etag = (resp.headers.get("ETag") or "").removeprefix("W/").strip('"') or None
    return Fetched(
        url,
        data,
        ctype,
        etag=new_etag,
        last_modified=resp.headers.get("Last-Modified"),
        final_url=current,
    )
