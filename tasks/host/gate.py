"""The gate on the GPU host: generate -> score -> finalize, GPU batch by GPU batch, in one task.

A generate message carries ``gpu_batches_per_task`` GPU batches. For each one the task's
thread runs three pure stages in order: ``Generator.generate``, then ``Gate.check`` (CLIP on
the same device, from the decoded pixel tensors: crop grid, resize and normalise in torch),
then hands the batch to the finalize pool (``ctx.finalize_pool``), which runs
``Gate.finalize`` (watermark embed and verify, XMP/C2PA, encoding) and the packshot fidelity
check, puts the final file (the raw PNG too only with ``store_raw``), and records the
generation and the gate decision in one transaction. Meanwhile the task's thread is already
driving the GPU through the next batch.

The task returns, and Celery acks its message, only once every batch has committed. A worker
killed while finalizing leaves those shots in ``generating`` with no row written: the
redelivered message makes them again, one by one, and shots that did commit are skipped. So
no shot is lost and none gets a second row.

A stage error in scoring or finalizing (not a transient one: those propagate, and Celery
retries the task) falls back to the old path for that batch: the raw PNG is stored, the shots
are recorded ``generated``, and the task enqueues them for the ``cpu`` queue's gate. So does
the whole message when the gate cannot be loaded on this host at all.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from catalog.models import ShotState
from catalog.shots import batched_inserts, lock_shots
from pipeline.generate.batch_table import batch_size_for
from pipeline.types import FilterDecision, Gate, ShotParams
from tasks import metrics, steps
from tasks.context import WorkerContext
from tasks.sources import packshot as packshot_step

log = logging.getLogger(__name__)
S = ShotState


@dataclass
class _Batch:
    """One GPU batch between scoring (task thread) and finalizing (a finalize thread)."""

    generated: steps.Generated
    decisions: dict[int, FilterDecision]
    timings: dict[str, float]
    fallback: str | None = None  # why this batch goes to the cpu queue's gate instead
    # The packshot shots' placements, still in memory (the fidelity check reads no blob).
    jobs: dict[int, packshot_step.PackshotJob] = field(default_factory=dict)


@dataclass
class _Finalized:
    raws: dict[int, steps.RawFile]
    finals: dict[int, dict[str, Any]] = field(default_factory=dict)  # watermarks columns
    stored: dict[int, steps.StoredRaw] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def generate_and_gate(
    ctx: WorkerContext,
    shot_ids: list[int],
    *,
    batch_id: str | None = None,
    first_delivery: bool = True,
) -> steps.StepResult:
    """planned -> pending_review | rejected on the GPU host (``generated`` for a batch
    whose gating failed: ``result.done``, for the cpu queue)."""
    the_gate = _host_gate(ctx)
    if the_gate is None:  # this host cannot gate: generate for the cpu queue's gate
        return steps.generate(ctx, shot_ids, batch_id=batch_id, first_delivery=first_delivery)
    result = steps.StepResult()
    batch_id = batch_id or uuid.uuid4().hex
    claim = steps.claim_for_generate(ctx, shot_ids, first_delivery, result, for_gate=True)
    jobs, params = packshot_step.prepare_batch(ctx, claim.packshots, claim.params, result.failed)
    if not params:
        return result
    futures: list[Future[steps.StepResult]] = []
    try:
        for chunk in gpu_batches(ctx, params):
            batch = _generate_and_score(ctx, the_gate, claim, chunk, batch_id, result, jobs)
            futures.append(
                ctx.finalize_pool.submit(_finalize_batch, ctx, the_gate, claim, batch, batch_id)
            )
    finally:
        # Never return (and get acked) while a batch is still finalizing.
        done, error = _wait_all(futures)
    if error is not None:
        raise error
    for part in done:
        result.merge(part)
    metrics.record_generated(len(result.done) + len(result.gated) + len(result.rejected))
    return result


def _host_gate(ctx: WorkerContext) -> Gate | None:
    """The gate, or None when it does not load on this host (CLIP does not fit beside the
    model, its checkpoint is not mounted here...): said once, not retried per message."""
    if ctx.host_gate_error is not None and not ctx.gate_loaded:
        return None
    try:
        return ctx.gate()
    except steps.transient_errors():
        raise
    except Exception as exc:
        ctx.host_gate_error = f"{type(exc).__name__}: {exc}"
        log.warning(
            "gate on the GPU host unavailable (%s); this worker's images go to the cpu "
            "queue's gate",
            ctx.host_gate_error,
        )
        return None


def gpu_batches(ctx: WorkerContext, params: list[ShotParams]) -> Iterator[list[ShotParams]]:
    """The message's shots in GPU batches of the generator's batch size for their key (the
    settings' default until the model is loaded: a load error belongs to the shots)."""
    first = params[0]
    arch = str(getattr(ctx.loaded_generator(first.model_id), "architecture", ""))
    size = batch_size_for(ctx.settings, arch, first.width, first.height)
    for i in range(0, len(params), size):
        yield params[i : i + size]


def _wait_all(
    futures: list[Future[steps.StepResult]],
) -> tuple[list[steps.StepResult], BaseException | None]:
    results: list[steps.StepResult] = []
    error: BaseException | None = None
    for fut in futures:
        try:
            results.append(fut.result())
        except BaseException as exc:  # re-raised by the caller once all have finished
            error = error or exc
    return results, error


def _generate_and_score(
    ctx: WorkerContext,
    the_gate: Gate,
    claim: steps.GenerateClaim,
    chunk: list[ShotParams],
    batch_id: str,
    result: steps.StepResult,
    jobs: dict[int, packshot_step.PackshotJob],
) -> _Batch:
    t0 = time.time()
    generated = steps.run_generators(ctx, chunk, batch_id, result, jobs)
    t1 = time.time()
    good = [o for o in generated.outputs if not o.error and o.image is not None]
    images = {o.shot_id: o.image for o in good if o.image is not None}  # (narrows the type)
    pixels = {o.shot_id: o.pixels for o in good if o.pixels is not None}
    decisions: dict[int, FilterDecision] = {}
    fallback = None
    try:
        decisions = steps.decide_by_brand(
            ctx, the_gate, claim.infos, claim.brand_rows, images, pixels
        )
    except steps.transient_errors():
        raise
    except Exception as exc:
        fallback = f"scoring failed: {type(exc).__name__}: {exc}"
        log.warning(
            "gate on the GPU host: %s; %d shot(s) go to the cpu queue", fallback, len(images)
        )
    for out in generated.outputs:
        out.pixels = None  # the device memory goes back before the next batch
    timings = {
        "generate_s": t1 - t0,
        "score_s": time.time() - t1,
        "generate_start": t0,
        "generate_end": t1,
    }
    return _Batch(generated, decisions, timings, fallback, jobs)


def _finalize_batch(
    ctx: WorkerContext, the_gate: Gate, claim: steps.GenerateClaim, batch: _Batch, batch_id: str
) -> steps.StepResult:
    """Runs on a finalize thread: final files, uploads, and the batch's one transaction."""
    res = steps.StepResult()
    cpu0, t0 = time.thread_time(), time.time()
    raws = {r.out.shot_id: r for r in steps.raw_files(batch.generated, claim.infos)}
    done = _Finalized(raws)
    if batch.fallback is None:
        try:
            _finalize_files(ctx, the_gate, claim, batch, done)
        except steps.transient_errors():
            raise
        except Exception as exc:
            batch.fallback = f"finalizing failed: {type(exc).__name__}: {exc}"
            log.warning("gate on the GPU host: %s; the batch goes to the cpu queue", batch.fallback)
    if batch.fallback is not None or ctx.settings.store_raw:
        stored = ctx.io_map(lambda r: steps.put_raw(ctx, r), list(raws.values()))
        done.stored = {st.raw.out.shot_id: st for st in stored}
    n, t1 = max(1, len(raws)), time.time()
    done.timings = {
        **batch.timings,
        "finalize_s": (t1 - t0) / n,
        "finalize_cpu_s": (time.thread_time() - cpu0) / n,
        "finalize_start": t0,
        "finalize_end": t1,
    }
    notes = batch.generated.packshot_notes
    if batch.fallback is not None:
        steps.record_generated(ctx, done.stored, batch.generated.errors, batch_id, res, notes)
        return res
    _record(ctx, batch, done, batch_id, res)
    return res


def _finalize_files(
    ctx: WorkerContext,
    the_gate: Gate,
    claim: steps.GenerateClaim,
    batch: _Batch,
    done: _Finalized,
) -> None:
    """Watermark, encode and put each kept or rejected image's final file (rejected ones
    get theirs too: a reviewer override publishes the exact bytes the sheet showed)."""
    images: dict[int, Image.Image] = {
        sid: raw.out.image for sid, raw in done.raws.items() if raw.out.image is not None
    }
    ids = [sid for sid in batch.decisions if sid in images]
    built = steps.finalize_files(ctx, the_gate, claim.infos, claim.provenance, images, ids)
    notes = batch.generated.packshot_notes
    packshots = {
        int(stub.id): {**(stub.packshot or {}), **notes.get(int(stub.id), {})}
        for stub in claim.packshots
        if stub.id in images
    }
    finals_data = {f.shot_id: f.image.data for f in built}
    packshot_step.check_fidelity(ctx, packshots, images, finals_data, batch.decisions, batch.jobs)
    done.finals = dict(ctx.io_map(lambda f: steps.put_final(ctx, f), built))


def _record(
    ctx: WorkerContext, batch: _Batch, done: _Finalized, batch_id: str, res: steps.StepResult
) -> None:
    """generating -> generated -> the decision, in one transaction per GPU batch."""
    errors = batch.generated.errors
    notes = batch.generated.packshot_notes
    with ctx.sessions.begin() as s, batched_inserts(s):
        for shot in lock_shots(s, list(done.raws) + list(errors), (S.generating,)):
            if shot.id in errors:
                steps.settle_error(shot, errors[shot.id], ctx.settings.max_attempts, res)
                continue
            packshot_step.note_packshot(shot, notes.get(shot.id))
            raw, stored = done.raws[shot.id], done.stored.get(shot.id)
            steps.record_output(s, shot, raw, batch_id, stored, done.timings)
            dec = batch.decisions[shot.id]
            steps.record_decision(s, shot, dec, done.finals.get(shot.id))
            (res.gated if dec.decision == S.pending_review else res.rejected).append(shot.id)
