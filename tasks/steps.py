"""The three steps of the line, shared by Celery tasks and the in-process runner.

Each step is three kinds of helper. *Claim*: load its rows by id in one short transaction and
skip shots that are not in the state it expects (that is what makes redelivery harmless).
*Compute*: call a pure stage from ``pipeline/`` outside any transaction, with blob-store I/O on
``ctx.io_map``. *Record*: write the results in one short transaction. Rows are never held
locked while a model runs. The caller enqueues the next step once the write has committed.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from catalog.embeddings import store_embedding
from catalog.models import Shot, ShotState
from catalog.shots import (
    ShotInfo,
    batched_inserts,
    claim_shots,
    final_files,
    hand_back,
    lock_shots,
    mark_failed,
    raw_keys,
    record_assets,
    record_gate,
    record_generation,
    retry_or_fail,
    shot_info,
    shot_params,
    shots_in_state,
    stored_brand_configs,
)
from pipeline.images import decode_image
from pipeline.storage import BlobInfo, content_key, sha256_bytes
from pipeline.types import (
    FilterDecision,
    FinalImage,
    Gate,
    GateItem,
    GenerationOutput,
    Generator,
    ProvenanceInfo,
    ShotParams,
)
from tasks import metrics
from tasks.context import WorkerContext
from tasks.sources import packshot as packshot_step

log = logging.getLogger(__name__)
S = ShotState


@dataclass
class StepResult:
    done: list[int] = field(default_factory=list)  # moved on; the next step gets these
    rejected: list[int] = field(default_factory=list)
    retry: list[int] = field(default_factory=list)  # back to planned: re-enqueue one by one
    failed: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # already past this step (redelivery)
    gated: list[int] = field(default_factory=list)  # gated on the GPU host: pending review

    def merge(self, other: StepResult) -> None:
        for name, ids in vars(other).items():
            getattr(self, name).extend(ids)


def transient_errors() -> tuple[type[BaseException], ...]:
    """Errors worth a retry with backoff: the DB, the blob store or the broker hiccuped."""
    from kombu.exceptions import OperationalError as BrokerError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from sqlalchemy.exc import DBAPIError, OperationalError

    from pipeline.storage import StorageError

    return (
        OperationalError,
        DBAPIError,
        StorageError,
        BrokerError,
        RedisConnectionError,
        RedisTimeoutError,
        ConnectionError,
        TimeoutError,
    )


def _hand_back_all(shots: Sequence[Shot], reason: str, result: StepResult) -> None:
    """Back to ``planned`` for a retry one by one; the attempt this batch cost is refunded
    (splitting a batch is not the shot's fault, or not yet)."""
    for shot in shots:
        shot.attempts = max(0, shot.attempts - 1)
        hand_back(shot, reason)
        result.retry.append(shot.id)


# --- generate -----------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerateClaim:
    params: list[ShotParams]
    infos: dict[int, ShotInfo]
    packshots: list[Shot] = field(default_factory=list)  # detached stubs (packshot_step)
    # What the gate on the GPU host needs too: each shot's provenance, and the config
    # stored on each brand row (``claim_for_generate(..., for_gate=True)``).
    provenance: dict[int, ProvenanceInfo] = field(default_factory=dict)
    brand_rows: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Generated:
    outputs: list[GenerationOutput] = field(default_factory=list)
    errors: dict[int, str] = field(default_factory=dict)  # shot id -> why it has no image
    packshot_notes: dict[int, dict[str, Any]] = field(default_factory=dict)  # packshot_step


@dataclass(frozen=True)
class RawFile:
    """A generated image to upload under its content-addressed ``key``."""

    out: GenerationOutput
    png: bytes
    key: str
    sha256: str


@dataclass(frozen=True)
class StoredRaw:
    raw: RawFile
    blob: BlobInfo  # what the store returned for ``raw.key``


def generate(
    ctx: WorkerContext,
    shot_ids: list[int],
    *,
    batch_id: str | None = None,
    first_delivery: bool = True,
) -> StepResult:
    """planned -> generated: a GPU batch, raw PNGs under ``raw/``, a ``generations`` row each."""
    result = StepResult()
    batch_id = batch_id or uuid.uuid4().hex
    claim = claim_for_generate(ctx, shot_ids, first_delivery, result)
    jobs, params = packshot_step.prepare_batch(ctx, claim.packshots, claim.params, result.failed)
    if not params:
        return result
    generated = run_generators(ctx, params, batch_id, result, jobs)
    notes = generated.packshot_notes
    ready = raw_files(generated, claim.infos)
    uploaded = {f.raw.out.shot_id: f for f in ctx.io_map(lambda f: put_raw(ctx, f), ready)}
    record_generated(ctx, uploaded, generated.errors, batch_id, result, notes)
    metrics.record_generated(len(result.done))
    return result


def claim_for_generate(
    ctx: WorkerContext,
    shot_ids: list[int],
    first_delivery: bool,
    result: StepResult,
    for_gate: bool = False,
) -> GenerateClaim:
    with ctx.sessions.begin() as s:
        claim = claim_shots(
            s, shot_ids, max_attempts=ctx.settings.max_attempts, count_attempt=first_delivery
        )
        result.failed += [shot.id for shot in claim.failed]
        if first_delivery and claim.redelivered and len(claim.claimed) > 1:
            # The worker died on this batch. If one shot kills workers, retrying the batch
            # would take its neighbours down again: retry each shot alone instead.
            _hand_back_all(claim.claimed, "batch redelivered after a lost worker", result)
            return GenerateClaim([], {})
        params = [shot_params(shot) for shot in claim.claimed]
        infos = shot_info(s, claim.claimed)
        stubs = [st for shot in claim.claimed if (st := packshot_step.job_stub(shot))]
        provenance, brand_rows = {}, {}
        if for_gate:
            provenance = {sh.id: provenance_of(sh, infos[sh.id]) for sh in claim.claimed}
            brand_rows = stored_brand_configs(s, {info.brand for info in infos.values()})
    claimed = {p.shot_id for p in params}
    result.skipped += [i for i in shot_ids if i not in claimed and i not in result.failed]
    return GenerateClaim(params, infos, stubs, provenance, brand_rows)


def run_generators(
    ctx: WorkerContext,
    params: list[ShotParams],
    batch_id: str,
    result: StepResult,
    jobs: dict[int, packshot_step.PackshotJob] | None = None,
) -> Generated:
    """One ``Generator.generate`` call per model (packshot shots: one inpainting call);
    the batch's wall time goes to metrics."""
    generated = Generated()
    started = time.perf_counter()
    by_model: dict[tuple[str, bool], list[ShotParams]] = defaultdict(list)
    for p in params:
        by_model[(p.model_id, p.shot_id in (jobs or {}))].append(p)
    for (model_id, packshot), group in by_model.items():
        _run_group(ctx, model_id, group, batch_id, generated, result, jobs if packshot else None)
    metrics.observe_batch(time.perf_counter() - started)
    return generated


def _run_group(
    ctx: WorkerContext,
    model_id: str,
    group: list[ShotParams],
    batch_id: str,
    generated: Generated,
    result: StepResult,
    jobs: dict[int, packshot_step.PackshotJob] | None = None,
) -> None:
    try:
        if jobs:
            outs, notes = packshot_step.generate_packshots(ctx, model_id, group, jobs, batch_id)
            generated.outputs += outs
            generated.packshot_notes.update(notes)
            return
        generator: Generator = ctx.generator(model_id)
        generated.outputs += generator.generate(group, batch_id=batch_id)
    except transient_errors():
        raise
    except Exception as exc:  # a stage error: isolate the shot that causes it
        reason = f"{type(exc).__name__}: {exc}"
        log.warning("generation of %d shot(s) failed: %s", len(group), reason)
        if len(group) > 1:
            with ctx.sessions.begin() as s:
                shots = lock_shots(s, [p.shot_id for p in group], (S.generating,))
                _hand_back_all(shots, f"batch split after: {reason}", result)
        else:
            generated.errors[group[0].shot_id] = reason


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


def raw_files(generated: Generated, infos: dict[int, ShotInfo]) -> list[RawFile]:
    """The images to upload under their content-addressed ``raw/`` keys; an output without
    one joins ``generated.errors``."""
    ready: list[RawFile] = []
    for out in generated.outputs:
        png = _png_of(out)
        if png is None:
            generated.errors[out.shot_id] = out.error or "generator returned no image"
            continue
        info = infos[out.shot_id]
        sha = out.sha256 or sha256_bytes(png)
        key = content_key("raw", info.brand, info.sku, info.template, sha256=sha, ext="png")
        ready.append(RawFile(out, png, key, sha))
    return ready


def put_raw(ctx: WorkerContext, raw: RawFile) -> StoredRaw:
    meta = {"shot-id": str(raw.out.shot_id)}
    blob = ctx.store.put(raw.key, raw.png, content_type="image/png", metadata=meta)
    return StoredRaw(raw, blob)


def record_generated(
    ctx: WorkerContext,
    uploaded: dict[int, StoredRaw],
    errors: dict[int, str],
    batch_id: str,
    result: StepResult,
    notes: dict[int, dict[str, Any]] | None = None,
) -> None:
    max_attempts = ctx.settings.max_attempts
    with ctx.sessions.begin() as s, batched_inserts(s):
        for shot in lock_shots(s, list(uploaded) + list(errors), (S.generating,)):
            if shot.id in errors:
                settle_error(shot, errors[shot.id], max_attempts, result)
                continue
            stored = uploaded[shot.id]
            packshot_step.note_packshot(shot, (notes or {}).get(shot.id))
            record_output(s, shot, stored.raw, batch_id, stored)
            result.done.append(shot.id)


def settle_error(shot: Shot, reason: str, max_attempts: int, result: StepResult) -> None:
    """A shot that got no image: back to ``planned`` for another try, or ``failed``."""
    retried = retry_or_fail(shot, reason, max_attempts=max_attempts)
    (result.retry if retried else result.failed).append(shot.id)


def record_output(
    s: Any,
    shot: Shot,
    raw: RawFile,
    batch_id: str,
    stored: StoredRaw | None,
    timings: dict[str, Any] | None = None,
) -> None:
    """The ``generations`` row of one output, in the caller's transaction: the raw PNG's
    sha256 and size, and where ``stored`` put it (the store-relative key: what get() takes
    back). Backend and key are "" when it was not stored (``store_raw`` off, the gate ran
    on the GPU host)."""
    out = raw.out
    record_generation(
        s,
        shot,
        blob_backend=stored.blob.backend if stored else "",
        blob_key=raw.key if stored else "",
        sha256=raw.sha256,
        size_bytes=len(raw.png),
        model_digest=out.model_digest,
        timings={**(out.timings or {}), **(timings or {})},
        device=str(out.device),
        library_versions=dict(out.library_versions or {}),
        batch_id=out.batch_id or batch_id,
    )


# --- gate ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _GateShot:
    info: ShotInfo
    raw_key: str
    provenance: ProvenanceInfo


@dataclass(frozen=True)
class _GateClaim:
    shots: dict[int, _GateShot]
    brand_rows: dict[str, dict[str, Any]]  # the config stored on each brand row
    packshots: dict[int, dict[str, Any]] = field(default_factory=dict)  # shot id -> packshot
    failed: list[int] = field(default_factory=list)  # generated without a stored raw


@dataclass(frozen=True)
class FinalFile:
    shot_id: int
    key: str
    image: FinalImage


def gate(ctx: WorkerContext, shot_ids: list[int]) -> StepResult:
    """generated -> pending_review | rejected: CLIP checks in one batch per brand, then
    watermark + provenance, written to ``final/...``."""
    result = StepResult()
    claim = _claim_for_gate(ctx, shot_ids)
    result.failed = list(claim.failed)
    result.skipped = [i for i in shot_ids if i not in claim.shots and i not in claim.failed]
    if not claim.shots:
        return result
    the_gate: Gate = ctx.gate()
    images = _load_raws(ctx, claim)
    infos = {sid: shot.info for sid, shot in claim.shots.items()}
    decisions = decide_by_brand(ctx, the_gate, infos, claim.brand_rows, images)
    # Rejected images get their final file too: a reviewer override can then publish the
    # exact bytes the sheet showed, and every stored final carries watermark + provenance.
    provenance = {sid: shot.provenance for sid, shot in claim.shots.items()}
    built = finalize_files(ctx, the_gate, infos, provenance, images, list(decisions))
    finals_data = {f.shot_id: f.image.data for f in built}
    packshot_step.check_fidelity(ctx, claim.packshots, images, finals_data, decisions)
    finals = dict(ctx.io_map(lambda f: put_final(ctx, f), built))
    _record_gated(ctx, decisions, finals, result)
    return result


def _claim_for_gate(ctx: WorkerContext, shot_ids: list[int]) -> _GateClaim:
    with ctx.sessions.begin() as s:
        shots = {shot.id: shot for shot in shots_in_state(s, shot_ids, S.generated)}
        infos = shot_info(s, list(shots.values()))
        keys = raw_keys(s, infos)
        failed = [sid for sid in infos if sid not in keys]
        for sid in failed:  # nothing to gate: a generation whose raw PNG was not stored
            mark_failed(shots[sid], "generated, but its raw image was not stored: cannot gate")
            del infos[sid]
        brand_rows = stored_brand_configs(s, {info.brand for info in infos.values()})
        gate_shots = {
            sid: _GateShot(info, keys[sid], provenance_of(shots[sid], info))
            for sid, info in infos.items()
        }
        packshots = {
            sid: dict(sh.packshot) for sid, sh in shots.items() if sh.source_image_id is not None
        }
    return _GateClaim(gate_shots, brand_rows, packshots, failed)


def provenance_of(shot: Shot, info: ShotInfo) -> ProvenanceInfo:
    return ProvenanceInfo(
        shot_id=shot.id,
        model_id=shot.model_id,
        model_digest=shot.model_digest,
        loras=list(shot.adapters or []),
        brand=info.brand,
        sku=info.sku,
        template=info.template,
    )


def _load_raws(ctx: WorkerContext, claim: _GateClaim) -> dict[int, Image.Image]:
    ids = list(claim.shots)
    raws = ctx.io_map(lambda sid: ctx.store.get(claim.shots[sid].raw_key), ids)
    # The bounded decoder (pixel cap, bomb check): a raw blob is ours, but the store is not.
    return {
        sid: decode_image(raw, f"shot {sid} raw image {claim.shots[sid].raw_key}")
        for sid, raw in zip(ids, raws, strict=True)
    }


def decide_by_brand(
    ctx: WorkerContext,
    the_gate: Gate,
    infos: dict[int, ShotInfo],
    brand_rows: dict[str, dict[str, Any]],
    images: dict[int, Image.Image],
    pixels: dict[int, Any] | None = None,
) -> dict[int, FilterDecision]:
    """One ``Gate.check`` batch per brand, under that brand's policy. ``pixels`` are the
    images' device tensors where the generator still holds them (the GPU host)."""
    by_brand: dict[str, list[int]] = defaultdict(list)
    for sid in images:
        by_brand[infos[sid].brand].append(sid)
    decisions: dict[int, FilterDecision] = {}
    for brand, ids in by_brand.items():
        policy = the_gate.policy_for(ctx.brand_config(brand, brand_rows.get(brand)))
        items = [
            GateItem(sid, images[sid], infos[sid].product_text, (pixels or {}).get(sid))
            for sid in ids
        ]
        decisions.update(zip(ids, the_gate.check(items, policy), strict=True))
    return decisions


def finalize_file(
    ctx: WorkerContext,
    the_gate: Gate,
    info: ShotInfo,
    provenance: ProvenanceInfo,
    image: Image.Image,
) -> FinalFile:
    """Watermark + provenance + encoding of one image, and its ``final/`` key."""
    sid = info.shot_id
    final = the_gate.finalize(sid, image, provenance, ctx.settings.output_format)
    key = content_key(
        "final", info.brand, info.sku, info.template, sha256=final.sha256, ext=final.ext
    )
    return FinalFile(sid, key, final)


def finalize_files(
    ctx: WorkerContext,
    the_gate: Gate,
    infos: dict[int, ShotInfo],
    provenance: dict[int, ProvenanceInfo],
    images: dict[int, Image.Image],
    shot_ids: Sequence[int],
) -> list[FinalFile]:
    return [finalize_file(ctx, the_gate, infos[i], provenance[i], images[i]) for i in shot_ids]


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


def _record_gated(
    ctx: WorkerContext,
    decisions: dict[int, FilterDecision],
    finals: dict[int, dict[str, Any]],
    result: StepResult,
) -> None:
    with ctx.sessions.begin() as s, batched_inserts(s):
        for shot in lock_shots(s, list(decisions), (S.generated,)):
            record_decision(s, shot, decisions[shot.id], finals.get(shot.id))
            kept = decisions[shot.id].decision == S.pending_review
            (result.done if kept else result.rejected).append(shot.id)


def record_decision(
    s: Any, shot: Shot, dec: FilterDecision, watermark: dict[str, Any] | None
) -> None:
    """The gate's rows for one ``generated`` shot, in the caller's transaction: the
    ``filter_results`` row, the final file's ``watermarks`` row and the embedding."""
    record_gate(
        s,
        shot,
        decision=dec.decision,
        policy_version=dec.policy_version,
        clip_model=dec.clip_model,
        scores=list(dec.scores),
        reasons=list(dec.reasons),
        watermark=watermark,
    )
    if dec.embedding is not None:
        store_embedding(s, shot.id, dec.clip_model, dec.embedding)
    metrics.record_gated(dec.decision, list(dec.reasons))


# --- publish ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PublishShot:
    info: ShotInfo
    final: BlobInfo | None  # the gated final file as recorded; None if it has none


# What publishing one shot's file came to: the published blob, or why the shot fails.
_Copied = tuple[int, BlobInfo | str]


def publish(ctx: WorkerContext, shot_ids: list[int]) -> StepResult:
    """approved -> published: upload the gated final file under its content-addressed key,
    then write the ``assets`` row. Already published shots are skipped (a no-op)."""
    result = StepResult()
    claimed = _claim_for_publish(ctx, shot_ids)
    result.skipped = [i for i in shot_ids if i not in claimed]
    copied = ctx.io_map(lambda p: _copy_final(ctx, p), list(claimed.values()))
    _record_published(ctx, copied, result)
    metrics.record_published(len(result.done))
    return result


def _claim_for_publish(ctx: WorkerContext, shot_ids: list[int]) -> dict[int, _PublishShot]:
    with ctx.sessions.begin() as s:
        infos = shot_info(s, shots_in_state(s, shot_ids, S.approved))
        finals = final_files(s, infos)
    return {sid: _PublishShot(info, finals.get(sid)) for sid, info in infos.items()}


def _copy_final(ctx: WorkerContext, shot: _PublishShot) -> _Copied:
    info, final, sid = shot.info, shot.final, shot.info.shot_id
    if final is None:
        return sid, "approved but has no gated final image"
    ext = final.key.rsplit(".", 1)[-1]
    key = content_key(info.brand, info.sku, info.template, sha256=final.sha256, ext=ext)
    meta = {"shot-id": str(sid)}
    try:
        # Server-side on S3: one request instead of a download and an upload.
        blob = ctx.store.copy(final.key, key, final.content_type, meta, src_info=final)
    except FileNotFoundError:
        return sid, f"final image {final.key} is missing from the blob store"
    if blob.sha256 and blob.sha256 != final.sha256:
        return sid, f"published {key} does not match the recorded sha256"
    return sid, blob


def _record_published(ctx: WorkerContext, copied: list[_Copied], result: StepResult) -> None:
    problems: dict[int, str] = {}
    uploads: dict[int, BlobInfo] = {}
    for sid, outcome in copied:
        if isinstance(outcome, str):
            problems[sid] = outcome
        else:
            uploads[sid] = outcome
    with ctx.sessions.begin() as s, s.no_autoflush:
        ready: list[tuple[Shot, BlobInfo]] = []
        for shot in lock_shots(s, list(uploads) + list(problems), (S.approved,)):
            if shot.id in problems:
                mark_failed(shot, problems[shot.id])
                result.failed.append(shot.id)
            else:
                ready.append((shot, uploads[shot.id]))
        not_published = set(record_assets(s, ready))
        for shot, _ in ready:
            (result.failed if shot.id in not_published else result.done).append(shot.id)
