"""The three steps of the line, shared by Celery tasks and the in-process runner.

Each step loads its rows by id, skips shots that are not in the state it expects (that is
what makes redelivery harmless), calls a pure stage from ``pipeline/`` outside any
transaction, and writes its results in one short transaction. Rows are never held locked
while a model runs. The caller enqueues the next step once the write has committed.
"""

from __future__ import annotations

import io
import logging
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from sqlalchemy import select

from catalog.models import Brand, Generation, Shot, ShotState, Watermark
from catalog.shots import (
    ShotInfo,
    batched_inserts,
    claim_shots,
    lock_shots,
    mark_failed,
    record_assets,
    record_gate,
    record_generation,
    retry_or_fail,
    shot_info,
    shot_params,
)
from pipeline.types import GateItem, ProvenanceInfo
from tasks.context import WorkerContext

log = logging.getLogger(__name__)
S = ShotState


@dataclass
class StepResult:
    done: list[int] = field(default_factory=list)  # moved on; the next step gets these
    rejected: list[int] = field(default_factory=list)
    retry: list[int] = field(default_factory=list)  # back to planned: re-enqueue one by one
    failed: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # already past this step (redelivery)


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


def _metric(name: str, *args: Any) -> None:
    # Metrics are optional observability; a missing exporter must never fail a shot.
    try:
        from tasks import metrics
    except ImportError:
        return
    fn = getattr(metrics, name, None)
    if fn is not None:
        fn(*args)


# --- generate -----------------------------------------------------------------------------


def generate(
    ctx: WorkerContext,
    shot_ids: list[int],
    *,
    batch_id: str | None = None,
    first_delivery: bool = True,
) -> StepResult:
    """planned -> generated: a GPU batch, raw PNGs under ``raw/``, a ``generations`` row each."""
    from pipeline.storage import content_key

    settings, result = ctx.settings, StepResult()
    batch_id = batch_id or uuid.uuid4().hex
    with ctx.sessions.begin() as s:
        claim = claim_shots(
            s, shot_ids, max_attempts=settings.max_attempts, count_attempt=first_delivery
        )
        result.failed += [shot.id for shot in claim.failed]
        if first_delivery and claim.redelivered and len(claim.claimed) > 1:
            # The worker died on this batch. If one shot kills workers, retrying the batch
            # would take its neighbours down again: retry each shot alone instead.
            for shot in claim.claimed:
                shot.attempts = max(0, shot.attempts - 1)  # the split itself is free
                retry_or_fail(shot, "batch redelivered after a lost worker", max_attempts=10**6)
                result.retry.append(shot.id)
            return result
        params = [shot_params(shot) for shot in claim.claimed]
        infos = shot_info(s, claim.claimed)
    claimed = {p.shot_id for p in params}
    result.skipped += [i for i in shot_ids if i not in claimed and i not in result.failed]
    if not params:
        return result

    errors: dict[int, str] = {}
    outputs: list[Any] = []
    started = time.perf_counter()
    by_model: dict[str, list[Any]] = defaultdict(list)
    for p in params:
        by_model[p.model_id].append(p)
    for model_id, group in by_model.items():
        try:
            outputs += ctx.generator(model_id).generate(group, batch_id=batch_id)
        except transient_errors():
            raise
        except Exception as exc:  # a stage error: isolate the shot that causes it
            reason = f"{type(exc).__name__}: {exc}"
            log.warning("generation of %d shot(s) failed: %s", len(group), reason)
            if len(group) > 1:
                with ctx.sessions.begin() as s:
                    for shot in lock_shots(s, [p.shot_id for p in group], (S.generating,)):
                        shot.attempts = max(0, shot.attempts - 1)  # not this shot's fault yet
                        retry_or_fail(shot, f"batch split after: {reason}", max_attempts=10**6)
                        result.retry.append(shot.id)
            else:
                errors[group[0].shot_id] = reason
    _metric("observe_batch", time.perf_counter() - started)

    from pipeline.storage import sha256_bytes

    ready: list[tuple[Any, bytes, str]] = []
    for out in outputs:
        if out.error or (out.image is None and out.png is None):
            errors[out.shot_id] = out.error or "generator returned no image"
            continue
        png = out.png
        if png is None:
            from pipeline.generate.generator import encode_png

            png = encode_png(out.image)
        info: ShotInfo = infos[out.shot_id]
        sha = out.sha256 or sha256_bytes(png)
        key = content_key("raw", info.brand, info.sku, info.template, sha256=sha, ext="png")
        ready.append((out, png, key))

    def upload(item: tuple[Any, bytes, str]) -> tuple[int, tuple[Any, str, Any]]:
        out, png, key = item
        meta = {"shot-id": str(out.shot_id)}
        blob = ctx.store.put(key, png, content_type="image/png", metadata=meta)
        return out.shot_id, (out, key, blob)

    uploads: dict[int, tuple[Any, str, Any]] = dict(ctx.io_map(upload, ready))

    with ctx.sessions.begin() as s, batched_inserts(s):
        for shot in lock_shots(s, list(uploads) + list(errors), (S.generating,)):
            if shot.id in errors:
                if retry_or_fail(shot, errors[shot.id], max_attempts=settings.max_attempts):
                    result.retry.append(shot.id)
                else:
                    result.failed.append(shot.id)
                continue
            out, key, blob = uploads[shot.id]
            record_generation(
                s,
                shot,
                blob_backend=blob.backend,
                blob_key=key,  # the store-relative key: what get() takes back
                sha256=blob.sha256,
                size_bytes=blob.size,
                model_digest=out.model_digest,
                timings=dict(out.timings or {}),
                device=str(out.device),
                library_versions=dict(out.library_versions or {}),
                batch_id=out.batch_id or batch_id,
            )
            result.done.append(shot.id)
    _metric("record_generated", len(result.done))
    return result


# --- gate ---------------------------------------------------------------------------------


def gate(ctx: WorkerContext, shot_ids: list[int]) -> StepResult:
    """generated -> pending_review | rejected: CLIP checks in one batch per brand, then
    watermark + provenance, written to ``final/...``."""
    from pipeline.storage import content_key

    settings, result = ctx.settings, StepResult()
    with ctx.sessions.begin() as s:
        shots = list(
            s.scalars(select(Shot).where(Shot.id.in_(shot_ids), Shot.state == S.generated))
        )
        infos = shot_info(s, shots)
        gens = {
            g.shot_id: g for g in s.scalars(select(Generation).where(Generation.shot_id.in_(infos)))
        }
        brand_rows = {b.name: b.config for b in s.scalars(select(Brand))}
        meta = {sh.id: (sh.model_id, sh.model_digest, list(sh.adapters or [])) for sh in shots}
    result.skipped = [i for i in shot_ids if i not in infos]
    if not infos:
        return result

    the_gate = ctx.gate()

    raws = ctx.io_map(lambda sid: ctx.store.get(gens[sid].blob_key), list(infos))
    images: dict[int, Image.Image] = {}
    by_brand: dict[str, list[int]] = defaultdict(list)
    for sid, raw in zip(infos, raws, strict=True):
        images[sid] = Image.open(io.BytesIO(raw)).convert("RGB")
        by_brand[infos[sid].brand].append(sid)

    decisions: dict[int, Any] = {}
    for brand, ids in by_brand.items():
        policy = the_gate.policy_for(ctx.brand_config(brand, brand_rows.get(brand)))
        items = [GateItem(sid, images[sid], infos[sid].product_text) for sid in ids]
        for sid, dec in zip(ids, the_gate.check(items, policy), strict=True):
            decisions[sid] = dec

    # Rejected images get their final file too: a reviewer override can then publish the
    # exact bytes the sheet showed, and every stored final carries watermark + provenance.
    built: list[tuple[int, str, Any]] = []
    for sid in decisions:
        info = infos[sid]
        model_id, model_digest, loras = meta[sid]
        prov = ProvenanceInfo(
            shot_id=sid,
            model_id=model_id,
            model_digest=model_digest,
            loras=loras,
            brand=info.brand,
            sku=info.sku,
            template=info.template,
        )
        final = the_gate.finalize(sid, images[sid], prov, settings.output_format)
        key = content_key(
            "final", info.brand, info.sku, info.template, sha256=final.sha256, ext=final.ext
        )
        built.append((sid, key, final))

    def upload(item: tuple[int, str, Any]) -> tuple[int, dict[str, Any]]:
        sid, key, final = item
        blob = ctx.store.put(
            key, final.data, content_type=final.content_type, metadata={"shot-id": str(sid)}
        )
        return sid, {
            "method": final.method,
            "payload": final.payload,
            "verified": bool(final.verified),
            "bit_accuracy": float(final.bit_accuracy),
            "image_backend": blob.backend,
            "image_key": key,
            "image_sha256": final.sha256,
            "image_size": len(final.data),
            "content_type": final.content_type,
            "c2pa_signed": bool(final.c2pa_signed),
        }

    finals: dict[int, dict[str, Any]] = dict(ctx.io_map(upload, built))

    with ctx.sessions.begin() as s, batched_inserts(s):
        for shot in lock_shots(s, list(decisions), (S.generated,)):
            dec = decisions[shot.id]
            record_gate(
                s,
                shot,
                decision=dec.decision,
                policy_version=dec.policy_version,
                clip_model=dec.clip_model,
                scores=list(dec.scores),
                reasons=list(dec.reasons),
                watermark=finals.get(shot.id),
            )
            (result.done if dec.decision == S.pending_review else result.rejected).append(shot.id)
            _metric("record_gated", dec.decision, list(dec.reasons))
    return result


# --- publish ------------------------------------------------------------------------------


def publish(ctx: WorkerContext, shot_ids: list[int]) -> StepResult:
    """approved -> published: upload the gated final file under its content-addressed key,
    then write the ``assets`` row. Already published shots are skipped (a no-op)."""
    from pipeline.storage import BlobInfo, content_key

    result = StepResult()
    with ctx.sessions.begin() as s:
        shots = list(s.scalars(select(Shot).where(Shot.id.in_(shot_ids), Shot.state == S.approved)))
        infos = shot_info(s, shots)
        marks = {
            w.shot_id: w for w in s.scalars(select(Watermark).where(Watermark.shot_id.in_(infos)))
        }
    result.skipped = [i for i in shot_ids if i not in infos]

    def upload(sid: int) -> tuple[int, Any, str | None]:
        info, mark = infos[sid], marks.get(sid)
        if mark is None:
            return sid, None, "approved but has no gated final image"
        ext = mark.image_key.rsplit(".", 1)[-1]
        key = content_key(info.brand, info.sku, info.template, sha256=mark.image_sha256, ext=ext)
        meta = {"shot-id": str(sid)}
        try:
            # Server-side on S3: one request instead of a download and an upload.
            recorded = BlobInfo(
                mark.image_backend,
                None,
                mark.image_key,
                mark.image_sha256,
                mark.image_size,
                None,
                mark.content_type,
            )
            blob = ctx.store.copy(mark.image_key, key, mark.content_type, meta, src_info=recorded)
        except FileNotFoundError:
            return sid, None, f"final image {mark.image_key} is missing from the blob store"
        if blob.sha256 and blob.sha256 != mark.image_sha256:
            return sid, None, f"published {key} does not match the recorded sha256"
        return sid, blob, None

    uploads: dict[int, BlobInfo] = {}
    problems: dict[int, str] = {}
    for sid, done, problem in ctx.io_map(upload, list(infos)):
        if problem:
            problems[sid] = problem
        else:
            uploads[sid] = done

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
    _metric("record_published", len(result.done))
    return result
