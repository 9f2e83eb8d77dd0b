"""The one driver of the line. ``generate_shots`` takes a generate message through claim ->
prepare -> (per GPU batch) generate -> score -> finalize -> record; ``gate_shots`` scores and
finalizes shots the ``cpu`` queue's gate gets; ``publish`` is ``tasks.line.publish``.

Where finalizing runs is chosen once per message (``finalize.HostFinalize`` on the GPU host
when its gate loads, else ``finalize.QueueFinalize``). On the GPU host the task's thread
scores each batch from the device pixels and hands it to the finalize threads, and is already
driving the GPU through the next batch. The message returns (and Celery acks it) only once
every batch has committed: a worker killed while finalizing leaves those shots in
``generating`` with no row written; the redelivered message makes them again, one by one,
and shots that did commit are skipped. No shot is lost and none gets a second row.
"""

from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import Future
from typing import Literal

from catalog.models import ShotState
from pipeline.failures import Failure
from pipeline.generate.batching import GpuBatch
from pipeline.types import Gate
from tasks import metrics
from tasks.context import WorkerContext
from tasks.line.claim import GenerateClaim, claim_for_gate, claim_for_generate
from tasks.line.finalize import (
    HostFinalize,
    Placement,
    QueueFinalize,
    ScoredBatch,
    check_fidelity,
    check_slot_rules,
    finalize_files,
    put_final,
    stored_placement,
)
from tasks.line.generate import generate_batch, gpu_batches
from tasks.line.prepare import PackshotJob, prepare_batch
from tasks.line.publish import publish
from tasks.line.record import fail_shots, record_gated
from tasks.line.results import LineResult, transient_errors
from tasks.line.score import decide_by_brand, load_raws

log = logging.getLogger(__name__)

__all__ = ["gate_shots", "generate_shots", "publish"]


def generate_shots(
    ctx: WorkerContext,
    shot_ids: list[int],
    *,
    batch_id: str | None = None,
    first_delivery: bool = True,
    gate_on: Literal["gpu", "cpu"] | None = None,
) -> LineResult:
    """planned -> pending_review | rejected where the gate runs on this host, else
    planned -> generated (``result.to_gate``: the cpu queue's gate takes them)."""
    the_gate = host_gate(ctx) if (gate_on or ctx.settings.gate_on) == "gpu" else None
    result = LineResult()
    batch_id = batch_id or uuid.uuid4().hex
    claim = claim_for_generate(ctx, shot_ids, first_delivery, result)
    jobs, params = prepare_batch(ctx, claim, result)
    if not params:
        return result
    strategy: HostFinalize | QueueFinalize = (
        HostFinalize(ctx, the_gate, claim, batch_id)
        if the_gate is not None
        else QueueFinalize(ctx, claim, batch_id)
    )
    futures: list[Future[LineResult]] = []
    try:
        for batch in gpu_batches(ctx, params, jobs):
            scored = _generate_and_score(ctx, the_gate, claim, batch, batch_id, result, jobs)
            futures.append(strategy.submit(scored))
    finally:
        # Never return (and get acked) while a batch is still finalizing.
        done, error = _wait_all(futures)
    if error is not None:
        raise error
    for part in done:
        result.merge(part)
    metrics.record_generated(len(result.to_gate) + len(result.gated) + len(result.rejected))
    return result


def host_gate(ctx: WorkerContext) -> Gate | None:
    """The gate, or None when it does not load on this host (CLIP does not fit beside the
    model, its checkpoint is not mounted here...): said once, not retried per message."""
    if ctx.host_gate_error is not None and not ctx.gate_loaded:
        return None
    try:
        return ctx.gate()
    except transient_errors():
        raise
    except Exception as exc:
        ctx.host_gate_error = f"{type(exc).__name__}: {exc}"
        log.warning(
            "gate on the GPU host unavailable (%s); this worker's images go to the cpu "
            "queue's gate",
            ctx.host_gate_error,
        )
        return None


def _wait_all(
    futures: list[Future[LineResult]],
) -> tuple[list[LineResult], BaseException | None]:
    results: list[LineResult] = []
    error: BaseException | None = None
    for fut in futures:
        try:
            results.append(fut.result())
        except BaseException as exc:  # re-raised by the caller once all have finished
            error = error or exc
    return results, error


def _generate_and_score(
    ctx: WorkerContext,
    the_gate: Gate | None,
    claim: GenerateClaim,
    batch: GpuBatch,
    batch_id: str,
    result: LineResult,
    jobs: dict[int, PackshotJob],
) -> ScoredBatch:
    """Generate one GPU batch and, with a gate on this host, score it while its pixels are
    still on the device. A scoring error (not a transient one) leaves the batch unscored:
    it goes to the cpu queue's gate."""
    t0 = time.time()
    generated = generate_batch(ctx, batch, batch_id, result, jobs)
    t1 = time.time()
    decisions = None
    if the_gate is not None:
        good = [o for o in generated.outputs if not o.error and o.image is not None]
        images = {o.shot_id: o.image for o in good if o.image is not None}
        pixels = {o.shot_id: o.pixels for o in good if o.pixels is not None}
        try:
            decisions = decide_by_brand(
                ctx, the_gate, claim.infos, claim.brand_rows, images, pixels
            )
        except transient_errors():
            raise
        except Exception as exc:
            log.warning(
                "gate on the GPU host: scoring failed: %s: %s; %d shot(s) go to the cpu queue",
                type(exc).__name__,
                exc,
                len(images),
            )
    for out in generated.outputs:
        out.pixels = None  # the device memory goes back before the next batch
    timings = {
        "generate_s": t1 - t0,
        "score_s": time.time() - t1,
        "generate_start": t0,
        "generate_end": t1,
    }
    return ScoredBatch(generated, jobs, decisions, timings)


def gate_shots(ctx: WorkerContext, shot_ids: list[int]) -> LineResult:
    """generated -> pending_review | rejected on the ``cpu`` queue: the stored raw images
    scored (one CLIP batch per brand), finalized and put, packshot fidelity read back from
    the stored placements."""
    result = LineResult()
    claim = claim_for_gate(ctx, shot_ids)
    result.failed = list(claim.failed)
    result.skipped = [i for i in shot_ids if i not in claim.shots and i not in claim.failed]
    if not claim.shots:
        return result
    the_gate = ctx.gate()
    images = load_raws(ctx, claim)
    infos = {sid: shot.info for sid, shot in claim.shots.items()}
    refused: dict[int, Failure] = {}
    decisions = decide_by_brand(ctx, the_gate, infos, claim.brand_rows, images, refused=refused)
    result.failed += fail_shots(ctx, refused, (ShotState.generated,))
    provenance = {sid: shot.provenance for sid, shot in claim.shots.items()}
    placements: dict[int, Placement | None] = {
        sid: stored_placement(ctx, shot.packshot.mask_keys) if shot.packshot else None
        for sid, shot in claim.shots.items()
        if shot.is_packshot
    }
    keeps = {sid: p.keep() for sid, p in placements.items() if p is not None}
    built = finalize_files(
        ctx, the_gate, infos, provenance, images, list(decisions), keeps, claim.brand_rows
    )
    finals_data = {f.shot_id: f.image.data for f in built}
    check_fidelity(the_gate, placements, images, finals_data, decisions)
    check_slot_rules(ctx, infos, claim.brand_rows, placements, finals_data, decisions)
    finals = dict(ctx.io_map(lambda f: put_final(ctx, f), built))
    record_gated(ctx, decisions, finals, result)
    return result
