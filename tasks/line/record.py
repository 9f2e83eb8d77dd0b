"""Record: the phases' results written in one short transaction each, rows locked only for
that transaction (``lock_shots`` skips shots no longer in the state the phase left them in:
a redelivered message never writes a second row). Failures are written with their kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from catalog.delivery.renditions import record_renditions
from catalog.embeddings import store_embedding
from catalog.models import Shot, ShotState
from catalog.shots import (
    batched_inserts,
    lock_shots,
    mark_failed,
    record_assets,
    record_gate,
    record_generation,
    retry_or_fail,
)
from pipeline.failures import Failure, is_permanent, one_line
from pipeline.packshot.records import PackshotPlan, PackshotRecord, column_json
from pipeline.storage import BlobInfo
from pipeline.types import FilterDecision
from tasks import metrics
from tasks.context import WorkerContext
from tasks.line.results import LineResult

if TYPE_CHECKING:
    from tasks.line.finalize import RawFile, StoredRaw

S = ShotState


def fail_shots(
    ctx: WorkerContext, errors: Mapping[int, Failure], states: tuple[S, ...] = (S.generating,)
) -> list[int]:
    """Shots (``generating`` unless ``states`` says otherwise) that cannot run (a bad input:
    retrying would fetch the same 404) end ``failed`` with their reason and kind. Returns
    their ids."""
    if not errors:
        return []
    with ctx.sessions.begin() as s:
        shots = lock_shots(s, list(errors), states)
        for shot in shots:
            mark_failed(shot, errors[shot.id].reason, errors[shot.id].kind)
        return [shot.id for shot in shots]


def settle_error(shot: Shot, failure: Failure, max_attempts: int, result: LineResult) -> None:
    """A shot that got no image: back to ``planned`` for another try, or ``failed``. A
    permanent failure (the model or an adapter does not load) fails at once: another try
    would load the same file and fail the same way."""
    if is_permanent(failure.kind):
        mark_failed(shot, one_line(failure.reason), failure.kind)
        result.failed.append(shot.id)
        return
    retried = retry_or_fail(shot, failure, max_attempts=max_attempts)
    (result.retry if retried else result.failed).append(shot.id)


def note_packshot(shot: Shot, rec: PackshotRecord | None) -> None:
    """What a packshot shot was made with, on its row (in the caller's transaction)."""
    if rec is not None:
        shot.packshot = column_json(PackshotPlan.from_json(shot.packshot), rec)


def record_output(
    s: Any,
    shot: Shot,
    raw: RawFile,
    batch_id: str,
    stored: StoredRaw | None,
    timings: Mapping[str, Any] | None = None,
) -> None:
    """The ``generations`` row of one output, in the caller's transaction: the raw PNG's
    sha256 and size, and where ``stored`` put it. Backend and key are "" when it was not
    stored (``store_raw`` off, the gate ran on the GPU host)."""
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


def record_generated(
    ctx: WorkerContext,
    stored: Mapping[int, StoredRaw],
    errors: Mapping[int, Failure],
    batch_id: str,
    result: LineResult,
    records: Mapping[int, PackshotRecord] | None = None,
    timings: Mapping[str, float] | None = None,
) -> None:
    """generating -> generated (for the cpu queue's gate), or the shot's error."""
    with ctx.sessions.begin() as s, batched_inserts(s):
        for shot in lock_shots(s, list(stored) + list(errors), (S.generating,)):
            if shot.id in errors:
                settle_error(shot, errors[shot.id], ctx.settings.max_attempts, result)
                continue
            note_packshot(shot, (records or {}).get(shot.id))
            record_output(s, shot, stored[shot.id].raw, batch_id, stored[shot.id], timings)
            result.to_gate.append(shot.id)


@dataclass(frozen=True)
class BatchRows:
    """Everything one GPU batch writes on the GPU host."""

    raws: Mapping[int, RawFile]
    stored: Mapping[int, StoredRaw]  # raw PNGs stored (``store_raw``)
    decisions: Mapping[int, FilterDecision]
    finals: Mapping[int, dict[str, Any]]  # watermarks columns by shot id
    records: Mapping[int, PackshotRecord]
    errors: Mapping[int, Failure]


def record_batch(
    ctx: WorkerContext,
    rows: BatchRows,
    batch_id: str,
    timings: Mapping[str, float],
    res: LineResult,
) -> None:
    """generating -> generated -> the decision, in one transaction per GPU batch."""
    with ctx.sessions.begin() as s, batched_inserts(s):
        for shot in lock_shots(s, list(rows.raws) + list(rows.errors), (S.generating,)):
            if shot.id in rows.errors:
                settle_error(shot, rows.errors[shot.id], ctx.settings.max_attempts, res)
                continue
            note_packshot(shot, rows.records.get(shot.id))
            stored = rows.stored.get(shot.id)
            record_output(s, shot, rows.raws[shot.id], batch_id, stored, timings)
            dec = rows.decisions[shot.id]
            record_decision(s, shot, dec, rows.finals.get(shot.id))
            (res.gated if dec.decision == S.pending_review else res.rejected).append(shot.id)


def record_gated(
    ctx: WorkerContext,
    decisions: Mapping[int, FilterDecision],
    finals: Mapping[int, dict[str, Any]],
    result: LineResult,
) -> None:
    """generated -> pending_review | rejected (the cpu queue's gate)."""
    with ctx.sessions.begin() as s, batched_inserts(s):
        for shot in lock_shots(s, list(decisions), (S.generated,)):
            record_decision(s, shot, decisions[shot.id], finals.get(shot.id))
            kept = decisions[shot.id].decision == S.pending_review
            (result.gated if kept else result.rejected).append(shot.id)


@dataclass(frozen=True)
class Published:
    """A master copied under its published key, and its stored renditions' row values."""

    master: BlobInfo
    renditions: list[dict[str, Any]] = field(default_factory=list)


def record_published(
    ctx: WorkerContext, done: list[tuple[int, Published | Failure]], result: LineResult
) -> None:
    """approved -> published with its ``assets`` and ``asset_renditions`` rows, or failed
    with the reason."""
    problems = {sid: o for sid, o in done if isinstance(o, Failure)}
    uploads = {sid: o for sid, o in done if not isinstance(o, Failure)}
    with ctx.sessions.begin() as s, s.no_autoflush:
        ready: list[tuple[Shot, BlobInfo]] = []
        for shot in lock_shots(s, list(uploads) + list(problems), (S.approved,)):
            if shot.id in problems:
                mark_failed(shot, problems[shot.id].reason, problems[shot.id].kind)
                result.failed.append(shot.id)
            else:
                ready.append((shot, uploads[shot.id].master))
        not_published = set(record_assets(s, ready))
        for shot, _ in ready:
            (result.failed if shot.id in not_published else result.published).append(shot.id)
        record_renditions(
            s, {sid: uploads[sid].renditions for sid in result.published if sid in uploads}
        )
