"""Finalize: watermark, provenance (XMP, C2PA) and encoding of each scored image, the put of
its final file, and the packshot masks' puts. Rejected images get their final file too: a
reviewer override then publishes the exact bytes the sheet showed.

Where it runs is a strategy, chosen once per message by the orchestrator:

- ``HostFinalize`` (``gate_on=gpu``, the default): on the GPU host's finalize threads
  (``ctx.finalize_pool``), so batch N is finalized while the GPU runs batch N+1; generation
  and gate decision are recorded in one transaction per batch.
- ``QueueFinalize`` (``gate_on=cpu``, or a batch whose scoring failed on the GPU host): the
  raw PNG is stored and the shots recorded ``generated``; the ``cpu`` queue's gate message
  scores and finalizes them (``orchestrator.gate_shots``).
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image

from catalog.shots import ShotInfo
from pipeline.brand.config import BrandConfigError
from pipeline.digests import sha256_bytes
from pipeline.failures import Failure, FailureKind
from pipeline.gate.channel_rules import check_rules
from pipeline.gate.policy import with_checks
from pipeline.images import ImageError, decode_image
from pipeline.keys import final_key, mask_key, raw_key
from pipeline.packshot.fidelity import Fidelity
from pipeline.packshot.records import PackshotRecord
from pipeline.packshot.stage import fidelity_scores
from pipeline.storage import BlobInfo
from pipeline.types import (
    FilterDecision,
    FinalImage,
    Gate,
    GenerationOutput,
    KeepPixels,
    ProvenanceInfo,
)
from tasks.context import WorkerContext
from tasks.line import record
from tasks.line.claim import GenerateClaim
from tasks.line.generate import Generated
from tasks.line.prepare import PackshotJob
from tasks.line.results import LineResult, transient_errors

log = logging.getLogger(__name__)
MISSING_PLACEMENT = "product fidelity: the placed source or its mask is missing from the store"


@dataclass(frozen=True)
class RawFile:
    """A generated image as PNG bytes, and its content-addressed ``raw/`` key."""

    out: GenerationOutput
    png: bytes
    key: str
    sha256: str


@dataclass(frozen=True)
class StoredRaw:
    raw: RawFile
    blob: BlobInfo  # what the store returned for ``raw.key``


@dataclass(frozen=True)
class FinalFile:
    shot_id: int
    key: str
    image: FinalImage


@dataclass
class ScoredBatch:
    """One GPU batch between the task's thread and finalizing."""

    generated: Generated
    jobs: Mapping[int, PackshotJob]  # the packshot shots' placements, still in memory
    decisions: dict[int, FilterDecision] | None  # None: not scored here (the cpu queue's)
    timings: dict[str, float] = field(default_factory=dict)


def _png_of(out: GenerationOutput) -> bytes | None:
    """The output's PNG bytes (encoded here if the generator gave only an image), or None."""
    if out.error:
        return None
    if out.png is not None:
        return out.png
    if out.image is None:
        return None
    from pipeline.generate.generator import encode_png  # torch: only where it is needed

    return encode_png(out.image)


def raw_files(generated: Generated, infos: Mapping[int, ShotInfo]) -> list[RawFile]:
    """The images under their content-addressed ``raw/`` keys; an output without one joins
    ``generated.errors`` with its kind."""
    ready: list[RawFile] = []
    for out in generated.outputs:
        png = _png_of(out)
        if png is None:
            kind = out.error_kind or FailureKind.generation
            generated.errors[out.shot_id] = Failure(
                kind, out.error or "generator returned no image"
            )
            continue
        info = infos[out.shot_id]
        sha = out.sha256 or sha256_bytes(png)
        ready.append(RawFile(out, png, raw_key(info.brand, info.sku, info.template, sha), sha))
    return ready


def put_raw(ctx: WorkerContext, raw: RawFile) -> StoredRaw:
    meta = {"shot-id": str(raw.out.shot_id)}
    blob = ctx.store.put(raw.key, raw.png, content_type="image/png", metadata=meta)
    return StoredRaw(raw, blob)


def finalize_files(
    ctx: WorkerContext,
    the_gate: Gate,
    infos: Mapping[int, ShotInfo],
    provenance: Mapping[int, ProvenanceInfo],
    images: Mapping[int, Image.Image],
    shot_ids: Sequence[int],
    keeps: Mapping[int, KeepPixels] | None = None,
    brand_rows: Mapping[str, dict[str, Any]] | None = None,
) -> list[FinalFile]:
    """Watermark + provenance + encoding of each image, and its ``final/`` key. ``keeps``:
    the packshot shots' product cores, which the watermark leaves alone; a shot whose
    template's slot rules demand a white background also keeps its pure-white pixels."""
    built = []
    fmt = ctx.settings.output_format
    for sid in shot_ids:
        info = infos[sid]
        keep = (keeps or {}).get(sid)
        if _white_slot(ctx, info, brand_rows):
            keep = replace(keep, white=True) if keep is not None else KeepPixels(white=True)
        if keep is not None:
            final = the_gate.finalize(sid, images[sid], provenance[sid], fmt, keep)
        else:
            final = the_gate.finalize(sid, images[sid], provenance[sid], fmt)
        key = final_key(info.brand, info.sku, info.template, final.sha256, final.ext)
        built.append(FinalFile(sid, key, final))
    return built


def _white_slot(
    ctx: WorkerContext, info: ShotInfo, brand_rows: Mapping[str, dict[str, Any]] | None
) -> bool:
    """Does the shot's template (as the brand file says now) demand RGB 255 around it?"""
    try:
        cfg = ctx.brand_config(info.brand, (brand_rows or {}).get(info.brand))
    except BrandConfigError:
        return False  # no config to read: nothing to keep (the slot rules say the same)
    spec = cfg.templates.get(info.template)
    return bool(spec is not None and spec.rules is not None and spec.rules.white_background)


def put_final(ctx: WorkerContext, f: FinalFile) -> tuple[int, dict[str, Any]]:
    """Upload the final file; returns its ``watermarks`` row columns."""
    final, meta = f.image, {"shot-id": str(f.shot_id)}
    blob = ctx.store.put(f.key, final.data, content_type=final.content_type, metadata=meta)
    return f.shot_id, {
        "method": final.method,
        "payload": final.payload,
        "verified": bool(final.verified),
        "bit_accuracy": float(final.bit_accuracy),
        "image_backend": blob.backend,
        "image_key": f.key,
        "image_sha256": final.sha256,
        "image_size": len(final.data),
        "content_type": final.content_type,
        "c2pa_signed": bool(final.c2pa_signed),
    }


def _png(array: np.ndarray, mode: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return buf.getvalue()


def put_mask(ctx: WorkerContext, png: bytes) -> tuple[str, str]:
    """Store a cutout mask or placed canvas (PNG bytes); returns ``(key, sha256)``."""
    sha = sha256_bytes(png)
    key = mask_key(sha)
    if not ctx.store.exists(key):
        ctx.store.put(key, png, content_type="image/png")
    return key, sha


def _downscaled(job: PackshotJob) -> bool:
    return job.canvas is not None and job.canvas is not job.placed


def packshot_record(ctx: WorkerContext, job: PackshotJob, exact: Fidelity) -> PackshotRecord:
    """Store the cutout mask and the placed canvas and alpha (off the GPU thread); what the
    shot records about them."""
    cut_key, cut_sha = put_mask(ctx, _png(job.cutout.alpha, "L"))
    placed_key, _ = put_mask(ctx, _png(job.placed.rgb, "RGB"))
    alpha_key, _ = put_mask(ctx, _png(job.placed.alpha, "L"))
    return PackshotRecord(
        cutout={**job.cutout.lineage(), "mask_key": cut_key, "mask_png_sha256": cut_sha},
        placed={
            **job.placed.lineage(),
            # The model's canvas, where the output size differs (the product was placed at
            # the output size from its source; the model saw a downscaled copy).
            **({"model_size": list(job.model_canvas.rgb.shape[1::-1])} if _downscaled(job) else {}),
            "image_key": placed_key,
            "alpha_key": alpha_key,
        },
        source_sha256=job.source.sha256,
        fidelity={"exact": exact.to_json()},
    )


def packshot_records(
    ctx: WorkerContext, batch: ScoredBatch, shot_ids: Sequence[int]
) -> dict[int, PackshotRecord]:
    exact = batch.generated.exact
    ids = [sid for sid in shot_ids if sid in exact and sid in batch.jobs]
    recs = ctx.io_map(lambda sid: packshot_record(ctx, batch.jobs[sid], exact[sid]), ids)
    return dict(zip(ids, recs, strict=True))


class QueueFinalize:
    """Store the raw PNGs and record the shots ``generated``: the ``cpu`` queue's gate
    scores and finalizes them (``result.to_gate``). Runs on the caller's thread."""

    def __init__(self, ctx: WorkerContext, claim: GenerateClaim, batch_id: str) -> None:
        self.ctx, self.claim, self.batch_id = ctx, claim, batch_id

    def submit(self, batch: ScoredBatch) -> Future[LineResult]:
        fut: Future[LineResult] = Future()
        try:
            fut.set_result(self.run(batch))
        except BaseException as exc:  # re-raised by the orchestrator once all have finished
            fut.set_exception(exc)
        return fut

    def run(self, batch: ScoredBatch, timings: Mapping[str, float] | None = None) -> LineResult:
        ctx, res = self.ctx, LineResult()
        raws = raw_files(batch.generated, self.claim.infos)
        stored = {st.raw.out.shot_id: st for st in ctx.io_map(lambda r: put_raw(ctx, r), raws)}
        records = packshot_records(ctx, batch, list(stored))
        errors = batch.generated.errors
        record.record_generated(ctx, stored, errors, self.batch_id, res, records, timings)
        return res


class HostFinalize:
    """Finalize on the GPU host's finalize threads (the batch arrives scored)."""

    def __init__(
        self, ctx: WorkerContext, the_gate: Gate, claim: GenerateClaim, batch_id: str
    ) -> None:
        self.ctx, self.gate, self.claim, self.batch_id = ctx, the_gate, claim, batch_id
        self.fallback = QueueFinalize(ctx, claim, batch_id)

    def submit(self, batch: ScoredBatch) -> Future[LineResult]:
        return self.ctx.finalize_pool.submit(self.run, batch)

    def run(self, batch: ScoredBatch) -> LineResult:
        """Final files, uploads, and the batch's one transaction. A stage error here (not a
        transient one: those propagate and Celery retries the message) sends the batch to
        the cpu queue's gate instead."""
        cpu0, t0 = time.thread_time(), time.time()
        raws = {r.out.shot_id: r for r in raw_files(batch.generated, self.claim.infos)}
        decisions = batch.decisions
        finals: dict[int, dict[str, Any]] = {}
        records: dict[int, PackshotRecord] = {}
        if decisions is not None:
            try:
                finals, records = self._finalize(batch, raws, decisions)
            except transient_errors():
                raise
            except Exception as exc:
                decisions = None
                log.warning(
                    "gate on the GPU host: finalizing failed: %s: %s; the batch goes to the "
                    "cpu queue",
                    type(exc).__name__,
                    exc,
                )
        timings = self._timings(batch, cpu0, t0, max(1, len(raws)))
        if decisions is None:
            return self.fallback.run(batch, timings)
        stored: dict[int, StoredRaw] = {}
        if self.ctx.settings.store_raw:
            put = self.ctx.io_map(lambda r: put_raw(self.ctx, r), list(raws.values()))
            stored = {st.raw.out.shot_id: st for st in put}
        res = LineResult()
        record.record_batch(
            self.ctx,
            record.BatchRows(raws, stored, decisions, finals, records, batch.generated.errors),
            self.batch_id,
            timings,
            res,
        )
        return res

    def _finalize(
        self, batch: ScoredBatch, raws: Mapping[int, RawFile], decisions: dict[int, FilterDecision]
    ) -> tuple[dict[int, dict[str, Any]], dict[int, PackshotRecord]]:
        images = {sid: r.out.image for sid, r in raws.items() if r.out.image is not None}
        ids = [sid for sid in decisions if sid in images]
        placements = {
            sid: Placement(job.placed.rgb, job.placed.alpha)
            for sid, job in batch.jobs.items()
            if sid in images
        }
        keeps = {sid: p.keep() for sid, p in placements.items()}
        built = finalize_files(
            self.ctx,
            self.gate,
            self.claim.infos,
            self.claim.provenance,
            images,
            ids,
            keeps,
            self.claim.brand_rows,
        )
        finals_data = {f.shot_id: f.image.data for f in built}
        check_fidelity(self.gate, placements, images, finals_data, decisions)
        check_slot_rules(
            self.ctx, self.claim.infos, self.claim.brand_rows, placements, finals_data, decisions
        )
        finals = dict(self.ctx.io_map(lambda f: put_final(self.ctx, f), built))
        return finals, packshot_records(self.ctx, batch, list(images))

    def _timings(self, batch: ScoredBatch, cpu0: float, t0: float, n: int) -> dict[str, float]:
        t1 = time.time()
        return {
            **batch.timings,
            "finalize_s": (t1 - t0) / n,
            "finalize_cpu_s": (time.thread_time() - cpu0) / n,
            "finalize_start": t0,
            "finalize_end": t1,
        }


# --- product fidelity: the final file against the placed product ----------------------


@dataclass(frozen=True)
class Placement:
    """A packshot shot's placed product on its canvas: what fidelity compares against."""

    canvas: np.ndarray  # (H, W, 3) uint8
    alpha: np.ndarray  # (H, W) uint8

    def keep(self) -> KeepPixels:
        """The product core (alpha 255), which the final file carries exactly."""
        return KeepPixels(self.canvas, self.alpha == 255)


def stored_placement(ctx: WorkerContext, keys: tuple[str | None, str | None]) -> Placement | None:
    """The placement the generate phase stored (the cpu queue's gate has no other copy)."""
    image_key, alpha_key = keys
    arrays = []
    for key, mode in ((image_key, "RGB"), (alpha_key, "L")):
        if not key:
            return None
        try:
            arrays.append(np.asarray(decode_image(ctx.store.get(key), mode=mode), np.uint8))
        except (FileNotFoundError, ImageError):
            return None
    return Placement(arrays[0], arrays[1])


def check_fidelity(
    the_gate: Gate,
    placements: Mapping[int, Placement | None],
    raws: Mapping[int, Image.Image],
    finals: Mapping[int, bytes],
    decisions: dict[int, FilterDecision],
) -> None:
    """Fold each packshot shot's fidelity scores into its decision (in place); a shot that
    fails is rejected with the reason. ``placements``: by packshot shot id (None: missing)."""
    for sid, placement in placements.items():
        if sid not in decisions or sid not in finals:
            continue
        if placement is None:
            decisions[sid] = with_checks(decisions[sid], [], [MISSING_PLACEMENT])
            continue
        scores, reasons = fidelity_scores(
            raws[sid], finals[sid], placement.canvas, placement.alpha, the_gate.image_encoder
        )
        decisions[sid] = with_checks(decisions[sid], scores, reasons)


# --- slot rules: the final file against what its template's slot demands ----------------


def check_slot_rules(
    ctx: WorkerContext,
    infos: Mapping[int, ShotInfo],
    brand_rows: Mapping[str, dict[str, Any]],
    placements: Mapping[int, Placement | None],
    finals: Mapping[int, bytes],
    decisions: dict[int, FilterDecision],
) -> None:
    """Fold the slot rules of each shot's template (``rules`` in the brand file) into its
    decision (in place), checked on the final file. A packshot's product is its placement's
    alpha; a text shot's is estimated (``pipeline.gate.channel_rules``)."""
    for sid, data in finals.items():
        info = infos.get(sid)
        if sid not in decisions or info is None:
            continue
        spec = ctx.brand_config(info.brand, brand_rows.get(info.brand)).templates.get(info.template)
        if spec is None or spec.rules is None:
            continue  # a template renamed since planning has no rules to apply
        try:
            image = np.asarray(decode_image(data, mode="RGB"), np.uint8)
        except ImageError as exc:
            decisions[sid] = with_checks(decisions[sid], [], [f"slot rule: {exc}"])
            continue
        placement = placements.get(sid)
        product = None if placement is None else placement.alpha > 0
        scores, reasons = check_rules(image, spec.rules, product)
        decisions[sid] = with_checks(decisions[sid], scores, reasons)
