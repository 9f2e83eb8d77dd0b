"""Prepare: packshot shots' inputs before the GPU. Each source image is read from the blob
store once (and fetched here if the fetch step has not reached it yet, with the same code and
policy as ``shotline.fetch_sources``), then cut out and placed on the shot's canvas through
the pure ``pipeline.packshot.stage``. A shot whose source or cutout is unusable ends
``failed`` with the reason and its kind; the rest of the message goes on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from catalog.models import SourceStatus
from catalog.packshots.loading import SourceRow, source_rows
from pipeline.digests import sha256_bytes
from pipeline.failures import Failure, FailureKind
from pipeline.images import ImageError
from pipeline.packshot.cutout import Cutout, CutoutError
from pipeline.packshot.placement import Placed
from pipeline.packshot.records import PackshotPlan
from pipeline.packshot.stage import cut, placed_for_output
from pipeline.sources.decode import DecodedSource, decode_source
from pipeline.types import ShotParams
from tasks.context import WorkerContext
from tasks.line.claim import GenerateClaim, PackshotShot
from tasks.line.record import fail_shots
from tasks.line.results import LineResult
from tasks.sources.fetching import fetch_sources


@dataclass(frozen=True)
class PackshotSource:
    source_id: int
    url: str
    sha256: str
    decoded: DecodedSource


@dataclass(frozen=True)
class PackshotJob:
    """One packshot shot's inputs: its source, the product cut out of it, and the canvas."""

    shot_id: int
    source: PackshotSource
    cutout: Cutout
    placed: Placed  # at the output size: what the product is composited back from
    plan: PackshotPlan
    # What the model sees: the shot's width x height (``placed`` downscaled when the output
    # size differs, else ``placed`` itself).
    canvas: Placed | None = None

    @property
    def model_canvas(self) -> Placed:
        return self.canvas if self.canvas is not None else self.placed


def _unusable(reason: str) -> Failure:
    return Failure(FailureKind.source_unavailable, " ".join(reason.split()))


def _load(ctx: WorkerContext, row: SourceRow) -> PackshotSource | Failure:
    """The decoded source, or why it cannot be used."""
    if row.status == SourceStatus.failed.value:
        return _unusable(f"source image {row.error or row.url + ': fetch failed'}")
    if row.status != SourceStatus.fetched.value or not row.blob_key or not row.sha256:
        return _unusable(f"source image {row.url}: not fetched")
    try:
        data = ctx.store.get(row.blob_key)
    except FileNotFoundError:
        return _unusable(
            f"source image {row.url}: its blob {row.blob_key} is missing (fetch again)"
        )
    if sha256_bytes(data) != row.sha256:
        return _unusable(f"source image {row.url}: blob {row.blob_key} does not match its sha256")
    try:
        decoded = decode_source(data, row.url, ctx.settings.source_max_pixels)
    except ImageError as exc:
        return _unusable(f"source image {exc}")
    return PackshotSource(row.id, row.url, row.sha256, decoded)


def load_packshot_sources(
    ctx: WorkerContext, wanted: Mapping[int, int]
) -> tuple[dict[int, PackshotSource], dict[int, Failure]]:
    """``{shot id: source image id}`` -> the loaded sources and the failures, by shot id.
    Each distinct source is read and decoded once, whatever number of shots use it."""
    if not wanted:
        return {}, {}
    with ctx.sessions.begin() as s:
        rows = source_rows(s, wanted.values())
    pending = [i for i, r in rows.items() if r.status == SourceStatus.pending.value]
    if pending:
        fetch_sources(ctx, pending)
        with ctx.sessions.begin() as s:
            rows.update(source_rows(s, pending))
    loaded = {sid: _load(ctx, row) for sid, row in rows.items()}
    ready: dict[int, PackshotSource] = {}
    errors: dict[int, Failure] = {}
    for shot_id, source_id in wanted.items():
        got = loaded.get(source_id, _unusable(f"source image {source_id} no longer exists"))
        if isinstance(got, Failure):
            errors[shot_id] = got
        else:
            ready[shot_id] = got
    return ready, errors


def prepare_jobs(
    ctx: WorkerContext, shots: Iterable[PackshotShot]
) -> tuple[dict[int, PackshotJob], dict[int, Failure]]:
    """Cut out and place the product of every packshot shot (each source cut once). Returns
    the jobs and, per shot that cannot run, its failure."""
    shots = list(shots)
    sources, errors = load_packshot_sources(ctx, {p.shot_id: p.source_image_id for p in shots})
    try:
        matte = ctx.matte() if sources else None
        fallback = ctx.fallback_matte() if sources and matte is None else None
    except CutoutError as exc:  # a bad SHOTLINE_MATTE_MODEL: every packshot shot says so
        refused = {sid: Failure(FailureKind.cutout_refused, f"cutout: {exc}") for sid in sources}
        return {}, {**errors, **refused}
    cutouts: dict[int, Cutout | str] = {}
    jobs: dict[int, PackshotJob] = {}
    for shot in shots:
        src = sources.get(shot.shot_id)
        if src is None:
            continue
        if src.source_id not in cutouts:
            cutouts[src.source_id] = cut(src.decoded.image, matte, src.url, fallback)
        cutout = cutouts[src.source_id]
        placed = (
            cutout
            if isinstance(cutout, str)
            else placed_for_output(
                cutout,
                shot.plan.placement_spec(),
                (shot.width, shot.height),
                shot.output_size,
                src.url,
            )
        )
        if isinstance(cutout, str) or isinstance(placed, str):
            reason = cutout if isinstance(cutout, str) else str(placed)
            errors[shot.shot_id] = Failure(FailureKind.cutout_refused, reason)
            continue
        canvas, full = placed
        jobs[shot.shot_id] = PackshotJob(shot.shot_id, src, cutout, full, shot.plan, canvas)
    return jobs, errors


def prepare_batch(
    ctx: WorkerContext, claim: GenerateClaim, result: LineResult
) -> tuple[dict[int, PackshotJob], list[ShotParams]]:
    """Before generation: the message's packshot jobs and the params still to generate; shots
    whose source or cutout is unusable end ``failed`` (a bad input: retrying would fetch the
    same 404)."""
    if not claim.packshots:
        return {}, list(claim.params)
    jobs, errors = prepare_jobs(ctx, claim.packshots.values())
    result.failed += fail_shots(ctx, errors)
    return jobs, [p for p in claim.params if p.shot_id not in errors]
