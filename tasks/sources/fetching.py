"""Fetching source images: catalog URLs -> content-addressed blobs + ``source_images`` rows.

The body of ``shotline.fetch_sources`` (``tasks.fetch``: the ``cpu`` queue, in-process when
embedded) and of the GPU step's own fetch of a still-pending source. It gets a list of
``source_images`` ids, downloads them on at most ``source_fetch_concurrency``
threads (the work is waiting on the network), decodes each to check it is an image and
measure it, and stores the bytes once under ``sources/<sha256[:2]>/<sha256>``. Every failure
is recorded on its row as one line naming the URL, and the other images go on.

Re-running is a no-op for an unchanged image: the stored ETag / Last-Modified go back as
``If-None-Match`` / ``If-Modified-Since`` (a 304 rewrites nothing), and an image whose
bytes hash to the stored sha256 is not written again.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from catalog.models import SourceStatus
from catalog.packshots.loading import sources_by_id
from catalog.packshots.sources import FetchOutcome, record_outcomes
from pipeline.digests import sha256_bytes
from pipeline.images import ImageError
from pipeline.settings import Settings
from pipeline.sources.decode import decode_source
from pipeline.sources.fetch import FetchError, FetchPolicy, fetch
from pipeline.storage import BlobStore, PermanentStorageError
from tasks.context import WorkerContext

log = logging.getLogger(__name__)


def source_key(sha256: str) -> str:
    """The blob key of a source image's bytes (content-addressed, shared by every URL)."""
    return f"sources/{sha256[:2]}/{sha256}"


@dataclass
class FetchReport:
    fetched: list[int] = field(default_factory=list)
    unchanged: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Row:
    id: int
    url: str
    status: str
    sha256: str | None
    etag: str | None
    last_modified: str | None
    blob_key: str | None


def _fetch_one(
    settings: Settings, store: BlobStore, policy: FetchPolicy, row: _Row
) -> FetchOutcome:
    have = row.status == SourceStatus.fetched.value and row.sha256 and row.blob_key
    client = None
    if row.url.startswith("s3://"):
        from pipeline.s3 import s3_client

        client = s3_client(settings.s3_endpoint_url, settings.s3_region)
    got = fetch(
        row.url,
        policy,
        s3_client=client,
        etag=row.etag if have else None,
        last_modified=row.last_modified if have else None,
    )
    if got.data is None:
        if have and store.exists(str(row.blob_key)):
            return FetchOutcome(row.id, unchanged=True)
        # "Not modified" but our copy is gone: fetch it again without the validators.
        got = fetch(row.url, policy, s3_client=client)
        if got.data is None:
            raise FetchError(row.url, "the server answers 304 to a request without validators")
    sha = sha256_bytes(got.data)
    key = source_key(sha)
    if have and sha == row.sha256 and store.exists(key):
        return FetchOutcome(row.id, unchanged=True)
    decoded = decode_source(got.data, row.url, settings.source_max_pixels)
    ctype = got.content_type or f"image/{(decoded.source_format or 'octet-stream').lower()}"
    if not store.exists(key):
        store.put(key, got.data, content_type=ctype)
    return FetchOutcome(
        row.id,
        sha256=sha,
        size_bytes=len(got.data),
        width=decoded.width,
        height=decoded.height,
        content_type=ctype,
        etag=got.etag,
        last_modified=got.last_modified,
        blob_backend=store.backend,
        blob_key=key,
        details={
            "source_mode": decoded.source_mode,
            "has_alpha": decoded.has_alpha,
            "conversions": decoded.steps,
            "final_url": got.final_url,
        },
    )


def _safe_fetch_one(
    settings: Settings, store: BlobStore, policy: FetchPolicy, row: _Row
) -> FetchOutcome:
    """One image's outcome; a bad image is an outcome, never an exception for the batch."""
    try:
        return _fetch_one(settings, store, policy, row)
    except (FetchError, ImageError) as exc:
        return FetchOutcome(row.id, error=" ".join(str(exc).split()))
    except PermanentStorageError as exc:
        # No bucket, access denied, bad credentials: a retry cannot help, so the row says
        # why (the transient StorageError still propagates and the task retries).
        return FetchOutcome(row.id, error=f"{row.url}: cannot store it: {exc}")
    except (OSError, ValueError) as exc:
        return FetchOutcome(row.id, error=f"{row.url}: {type(exc).__name__}: {exc}")


def fetch_sources(ctx: WorkerContext, source_ids: list[int]) -> FetchReport:
    """Fetch these source images (any state: the caller chose them) and record each one."""
    with ctx.sessions.begin() as s:
        rows = [
            _Row(r.id, r.url, r.status, r.sha256, r.etag, r.last_modified, r.blob_key)
            for r in sources_by_id(s, source_ids)
        ]
    policy = FetchPolicy.from_settings(ctx.settings)
    store = ctx.store
    workers = max(1, min(ctx.settings.source_fetch_concurrency, len(rows)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="source-fetch") as pool:
        outcomes = list(pool.map(lambda r: _safe_fetch_one(ctx.settings, store, policy, r), rows))
    with ctx.sessions.begin() as s:
        record_outcomes(s, outcomes)
    report = FetchReport()
    for o in outcomes:
        if o.error is not None:
            report.failed[o.source_id] = o.error
            log.info("source %s failed: %s", o.source_id, o.error)
        elif o.unchanged:
            report.unchanged.append(o.source_id)
        else:
            report.fetched.append(o.source_id)
    return report
