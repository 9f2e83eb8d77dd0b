"""Packshot inputs for the GPU step: each shot's source image, from the blob store.

Kept apart from ``tasks.steps`` so the generate step calls it in a few lines. A source still
``pending`` (the fetch step has not reached it) is fetched here, with the same code and
policy as ``shotline.fetch_sources``; one that failed fails its shots with the fetch's reason,
which names the URL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from catalog.models import Shot, ShotState, SourceImage, SourceStatus
from catalog.shots import lock_shots, mark_failed
from pipeline.digests import sha256_bytes
from pipeline.images import ImageError
from pipeline.sources.decode import DecodedSource, decode_source
from tasks.context import WorkerContext
from tasks.fetch import fetch_sources


@dataclass(frozen=True)
class PackshotSource:
    source_id: int
    url: str
    sha256: str
    decoded: DecodedSource


@dataclass(frozen=True)
class _Row:
    id: int
    url: str
    status: str
    sha256: str | None
    blob_key: str | None
    error: str | None


def _rows(ctx: WorkerContext, ids: set[int]) -> dict[int, _Row]:
    with ctx.sessions.begin() as s:
        return {
            r.id: _Row(r.id, r.url, r.status, r.sha256, r.blob_key, r.error)
            for r in s.scalars(select(SourceImage).where(SourceImage.id.in_(ids)))
        }


def _load(ctx: WorkerContext, row: _Row) -> PackshotSource | str:
    """The decoded source, or the one-line reason it cannot be used."""
    if row.status == SourceStatus.failed.value:
        return f"source image {row.error or row.url + ': fetch failed'}"
    if row.status != SourceStatus.fetched.value or not row.blob_key or not row.sha256:
        return f"source image {row.url}: not fetched"
    try:
        data = ctx.store.get(row.blob_key)
    except FileNotFoundError:
        return f"source image {row.url}: its blob {row.blob_key} is missing (fetch again)"
    if sha256_bytes(data) != row.sha256:
        return f"source image {row.url}: blob {row.blob_key} does not match its sha256"
    try:
        decoded = decode_source(data, row.url, ctx.settings.source_max_pixels)
    except ImageError as exc:
        return f"source image {exc}"
    return PackshotSource(row.id, row.url, row.sha256, decoded)


def load_packshot_sources(
    ctx: WorkerContext, wanted: Mapping[int, int]
) -> tuple[dict[int, PackshotSource], dict[int, str]]:
    """``{shot id: source image id}`` -> the loaded sources and the failures, by shot id.
    Each distinct source is read and decoded once, whatever number of shots use it."""
    if not wanted:
        return {}, {}
    rows = _rows(ctx, set(wanted.values()))
    pending = [i for i, r in rows.items() if r.status == SourceStatus.pending.value]
    if pending:
        fetch_sources(ctx, pending)
        rows.update(_rows(ctx, set(pending)))
    loaded = {sid: _load(ctx, row) for sid, row in rows.items()}
    ready: dict[int, PackshotSource] = {}
    errors: dict[int, str] = {}
    for shot_id, source_id in wanted.items():
        got = loaded.get(source_id, f"source image {source_id} no longer exists")
        if isinstance(got, str):
            errors[shot_id] = " ".join(got.split())
        else:
            ready[shot_id] = got
    return ready, errors


def packshot_sources(shots: Sequence[Shot]) -> dict[int, int]:
    """``{shot id: source image id}`` of the packshot shots among ``shots``."""
    return {s.id: s.source_image_id for s in shots if s.source_image_id is not None}


def fail_unsourced(ctx: WorkerContext, errors: Mapping[int, str]) -> list[int]:
    """Shots whose source image cannot be used end ``failed`` with the reason (a bad input:
    retrying would fetch the same 404). Returns their ids."""
    if not errors:
        return []
    with ctx.sessions.begin() as s:
        shots = lock_shots(s, list(errors), (ShotState.generating,))
        for shot in shots:
            mark_failed(shot, errors[shot.id])
        return [shot.id for shot in shots]


def mask_key(sha256: str) -> str:
    """Cutout masks are content-addressed like sources: the same cutout is stored once."""
    return f"masks/{sha256[:2]}/{sha256}.png"


def put_mask(ctx: WorkerContext, png: bytes) -> tuple[str, str]:
    """Store a cutout mask (PNG bytes); returns ``(key, sha256)``."""
    sha = sha256_bytes(png)
    key = mask_key(sha)
    if not ctx.store.exists(key):
        ctx.store.put(key, png, content_type="image/png")
    return key, sha


def note_cutout(shot: Shot, cutout: Mapping[str, Any] | None) -> None:
    """Record a packshot shot's cutout (method, params, mask sha256/key, confidence) and the
    placement it was composed with on the row, in the caller's transaction."""
    if cutout is None:
        return
    shot.packshot = {**(shot.packshot or {}), "cutout": dict(cutout)}
