"""Generate: the message's shots in GPU batches (``pipeline.generate.batching``), each through
its model's generator; packshot batches inpaint around the placed product (a stand-in without
an inpainting pipeline generates the scene plainly) and the product's own pixels are
composited back and checked bit for bit (``pipeline.packshot.stage``).

A stage error on a batch of several shots hands them back for a retry one by one (so one
poison shot cannot sink its neighbours); on a single shot it is that shot's failure, with its
kind. A permanent error (the model or an adapter does not load) fails every shot of the batch
at once. Transient errors propagate (Celery retries the message).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from catalog.models import ShotState
from catalog.shots import lock_shots
from pipeline.failures import Failure, FailureKind, failure_of, is_permanent
from pipeline.generate.batch_table import batch_size_for
from pipeline.generate.batching import GpuBatch, PackshotKey, plan_gpu_batches
from pipeline.generate.controlnet import ControlSpec
from pipeline.packshot.fidelity import Fidelity
from pipeline.packshot.stage import composite_checked
from pipeline.types import GenerationOutput, Generator, ShotParams
from tasks import metrics
from tasks.context import WorkerContext
from tasks.line.claim import hand_back_all
from tasks.line.prepare import PackshotJob
from tasks.line.results import LineResult, transient_errors

if TYPE_CHECKING:
    from pipeline.generate.inpaint import InpaintShot

log = logging.getLogger(__name__)
S = ShotState


@dataclass
class Generated:
    """One GPU batch's outcome: images, per-shot failures, and for packshot shots the exact
    check of the composite (its masks are stored when the batch is finalized)."""

    outputs: list[GenerationOutput] = field(default_factory=list)
    errors: dict[int, Failure] = field(default_factory=dict)
    exact: dict[int, Fidelity] = field(default_factory=dict)


def gpu_batches(
    ctx: WorkerContext, params: list[ShotParams], jobs: Mapping[int, PackshotJob]
) -> list[GpuBatch]:
    """The message's GPU batches. The batch size is the table's for the loaded model's
    architecture (the settings' default until it is loaded: a load error belongs to the
    shots, not to batching)."""
    keys = {
        sid: PackshotKey(job.plan.inpaint_model, _control_key(job)) for sid, job in jobs.items()
    }

    def size_for(model_id: str, first: ShotParams) -> int:
        loaded = ctx.loaded_generator(model_id)
        arch = loaded.architecture if loaded is not None else ""
        return batch_size_for(ctx.settings, arch, *first.output_size)

    return plan_gpu_batches(params, keys, size_for)


def _control_key(job: PackshotJob) -> str:
    spec = ControlSpec.from_json(job.plan.controlnet)
    return spec.key() if spec else ""


def generate_batch(
    ctx: WorkerContext,
    batch: GpuBatch,
    batch_id: str,
    result: LineResult,
    jobs: Mapping[int, PackshotJob],
) -> Generated:
    """One GPU batch through its generator; the batch's wall time goes to metrics."""
    generated = Generated()
    started = time.perf_counter()
    try:
        generator: Generator = ctx.generator(batch.model_id)
        if batch.packshot is None:
            generated.outputs += generator.generate(batch.shots, batch_id=batch_id)
        else:
            _generate_packshots(generator, batch, jobs, batch_id, generated)
    except transient_errors():
        raise
    except Exception as exc:  # a stage error: isolate the shot that causes it
        failure = failure_of(exc, named=True)
        log.warning("generation of %d shot(s) failed: %s", len(batch.shots), failure.reason)
        if is_permanent(failure.kind):
            # The model or an adapter does not load: every shot of the batch would meet the
            # same file again, one by one or retried, so they all fail now.
            for p in batch.shots:
                generated.errors[p.shot_id] = failure
        elif len(batch.shots) > 1:
            with ctx.sessions.begin() as s:
                shots = lock_shots(s, [p.shot_id for p in batch.shots], (S.generating,))
                hand_back_all(shots, f"batch split after: {failure.reason}", result)
        else:
            generated.errors[batch.shots[0].shot_id] = failure
    metrics.observe_batch(time.perf_counter() - started)
    return generated


def _generate_packshots(
    generator: Generator,
    batch: GpuBatch,
    jobs: Mapping[int, PackshotJob],
    batch_id: str,
    generated: Generated,
) -> None:
    """Inpainted around the placed product (diffusers' inpainting pipeline on the loaded
    model's modules, each shot with its own image and mask; the brand's ControlNet, recorded
    on the shot at plan time, conditions the batch on the packshot's edges), the product
    composited back. A stand-in generator without an inpainter generates the scene and the
    product is composited over it."""
    inpainter = generator.inpainter()
    if inpainter is None:
        for out in generator.generate(batch.shots, batch_id=batch_id):
            _keep(out, _composite_stand_in(out, jobs[out.shot_id]), generated)
        return
    control = ControlSpec.from_json(jobs[batch.shots[0].shot_id].plan.controlnet)
    shots = [_inpaint_shot(p, jobs[p.shot_id]) for p in batch.shots]
    for res in inpainter.generate(shots, batch_id=batch_id, control=control):
        _keep(res.output, res.fidelity, generated)


def _inpaint_shot(params: ShotParams, job: PackshotJob) -> InpaintShot:
    """The inpainter's shot: the model's canvas, and the placement at the output size when
    it differs (the second pass starts from it and the product goes back from it)."""
    from pipeline.generate.inpaint import InpaintShot

    full = job.placed if job.model_canvas is not job.placed else None
    return InpaintShot(params, job.model_canvas, full)


def _composite_stand_in(out: GenerationOutput, job: PackshotJob) -> Fidelity | None:
    """A stand-in's scene with the product pasted back (in place on ``out``)."""
    if out.error or out.image is None:
        return None
    final, exact = composite_checked(out.image, job.placed)
    out.image, out.png, out.sha256 = final, None, None
    return exact


def _keep(out: GenerationOutput, exact: Fidelity | None, generated: Generated) -> None:
    """An output, unless its product pixels did not survive (then it fails, as fidelity)."""
    if not out.error and exact is not None and not exact.ok:
        out = dataclasses.replace(
            out, image=None, png=None, error=exact.reason, error_kind=FailureKind.fidelity
        )
    elif not out.error and exact is not None:
        generated.exact[out.shot_id] = exact
    generated.outputs.append(out)


def regenerate(
    ctx: WorkerContext, params: list[ShotParams], jobs: Mapping[int, PackshotJob], batch_id: str
) -> list[GenerationOutput]:
    """The outputs of ``params`` made again exactly as the line made them (``reproduce``):
    the same batches, generators and composite; nothing is recorded, errors propagate."""
    generated = Generated()
    for batch in gpu_batches(ctx, params, jobs):
        generator: Generator = ctx.generator(batch.model_id)
        if batch.packshot is None:
            generated.outputs += generator.generate(batch.shots, batch_id=batch_id)
        else:
            _generate_packshots(generator, batch, jobs, batch_id, generated)
    return generated.outputs
