"""Where the line stands: counts by state, recent throughput, failures with their reasons;
and the orchestration's queries (which shots to run, how they batch, how far they got, which
stalled). ``tasks/`` decides what to do with the answers."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from catalog.delivery.retry import retryable_counts
from catalog.models import (
    Asset,
    Brand,
    Generation,
    Product,
    ProductRevision,
    Shot,
    ShotState,
    SourceImage,
    SourceImageRef,
    Watermark,
    utcnow,
)
from catalog.shots import id_chunks, shot_params


def _brand_filter(stmt: Any, brand: str | None) -> Any:
    if brand:
        stmt = stmt.join(Brand, Brand.id == Shot.brand_id).where(Brand.name == brand)
    return stmt


def counts_by_state(session: Session, brand: str | None = None) -> dict[str, int]:
    """Every state, zeros included, in pipeline order."""
    stmt = _brand_filter(select(Shot.state, func.count()).group_by(Shot.state), brand)
    found = dict(session.execute(stmt).all())
    counts = {s.value: int(found.pop(s.value, 0)) for s in ShotState}
    counts.update({k: int(v) for k, v in found.items()})  # an unknown state still shows
    return counts


def throughput(session: Session, minutes: int = 5, brand: str | None = None) -> dict[str, Any]:
    """Images generated, gated and published in the last ``minutes``, and the rates per minute."""
    since = utcnow() - timedelta(minutes=minutes)
    out: dict[str, Any] = {"window_minutes": minutes}
    for name, model, column in (
        ("generated", Generation, Generation.created_at),
        # One watermarks row per shot, written when it is first gated (kept or rejected):
        # a rescore adds filter_results rows, and must not count the shot again.
        ("gated", Watermark, Watermark.created_at),
        ("published", Asset, Asset.published_at),
    ):
        stmt = select(func.count()).select_from(model).join(Shot, Shot.id == model.shot_id)
        stmt = _brand_filter(stmt.where(column >= since), brand)
        n = int(session.scalar(stmt) or 0)
        out[name] = n
        out[f"{name}_per_min"] = round(n / minutes, 2) if minutes else 0.0
    return out


def recent_failures(
    session: Session, limit: int = 20, brand: str | None = None
) -> list[dict[str, Any]]:
    stmt = _brand_filter(
        select(Shot.id, Shot.attempts, Shot.error, Shot.error_kind, Shot.updated_at)
        .where(Shot.state == ShotState.failed)
        .order_by(Shot.updated_at.desc(), Shot.id.desc())
        .limit(limit),
        brand,
    )
    return [
        {
            "shot_id": sid,
            "attempts": attempts,
            "error": error,
            "kind": kind,
            "at": at.isoformat() if at else None,
        }
        for sid, attempts, error, kind, at in session.execute(stmt)
    ]


def failures_by_kind(session: Session, brand: str | None = None) -> dict[str, int]:
    """Failed shots by failure kind (``pipeline.failures.FailureKind``); "unknown" for
    failures recorded before kinds were."""
    stmt = _brand_filter(
        select(Shot.error_kind, func.count()).where(Shot.state == ShotState.failed), brand
    )
    rows = session.execute(stmt.group_by(Shot.error_kind))
    return {str(kind or "unknown"): int(n) for kind, n in sorted(rows, key=lambda r: -r[1])}


def all_assets(session: Session) -> list[Asset]:
    """Every published asset, oldest first (the embedded demo's summary)."""
    return list(session.scalars(select(Asset).order_by(Asset.id)))


def failed_shots(session: Session) -> list[tuple[int, str | None]]:
    """Every failed shot's id and reason, by id (the embedded demo's summary)."""
    stmt = select(Shot.id, Shot.error).where(Shot.state == ShotState.failed).order_by(Shot.id)
    return [(int(i), e) for i, e in session.execute(stmt)]


def source_image_counts(session: Session, brand: str | None = None) -> dict[str, int]:
    """The catalog images packshot shots are made from, by fetch status (of the images the
    brand's products name, with ``brand``)."""
    stmt = select(SourceImage.status, func.count(func.distinct(SourceImage.id)))
    if brand is not None:
        stmt = (
            stmt.join(SourceImageRef, SourceImageRef.source_image_id == SourceImage.id)
            .join(ProductRevision, ProductRevision.id == SourceImageRef.product_revision_id)
            .join(Product, Product.id == ProductRevision.product_id)
            .join(Brand, Brand.id == Product.brand_id)
            .where(Brand.name == brand)
        )
    rows = session.execute(stmt.group_by(SourceImage.status))
    return {str(state): int(n) for state, n in rows}


def status_report(
    session: Session, brand: str | None = None, minutes: int = 5, failures: int = 20
) -> dict[str, Any]:
    counts = counts_by_state(session, brand)
    return {
        "brand": brand,
        "total": sum(counts.values()),
        "counts": counts,
        "source_images": source_image_counts(session, brand),
        "throughput": throughput(session, minutes, brand),
        "failure_kinds": failures_by_kind(session, brand),
        # What `shotline run --retry-failed` would re-queue, by kind.
        "retryable_failures": retryable_counts(session, brand),
        "failures": recent_failures(session, failures, brand),
    }


def shot_states(session: Session, shot_ids: Sequence[int]) -> dict[int, tuple[str, str | None]]:
    """The state and error of each of ``shot_ids`` (after ``review approve`` publishes)."""
    out: dict[int, tuple[str, str | None]] = {}
    for part in id_chunks(shot_ids):
        rows = session.execute(select(Shot.id, Shot.state, Shot.error).where(Shot.id.in_(part)))
        out.update({sid: (state, error) for sid, state, error in rows})
    return out


# --- orchestration -------------------------------------------------------------------

S = ShotState
# Stalled in these states, a shot is re-sent to the step that moves it on.
_RESENT = (S.planned, S.generated, S.approved)


def planned_shots(
    session: Session, brand: str | None = None, limit: int | None = None
) -> list[int]:
    """Ids of planned shots (of ``brand``, at most ``limit``), oldest first."""
    stmt = select(Shot.id).where(Shot.state == S.planned).order_by(Shot.id)
    if brand:
        stmt = stmt.join(Brand, Brand.id == Shot.brand_id).where(Brand.name == brand)
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.scalars(stmt))


def planned_models(session: Session, brand: str | None = None) -> list[str]:
    """The models the planned shots (of ``brand``) pinned at plan time, sorted."""
    stmt = select(Shot.model_id).where(Shot.state == S.planned).distinct()
    if brand:
        stmt = stmt.join(Brand, Brand.id == Shot.brand_id).where(Brand.name == brand)
    return sorted(m for m in session.scalars(stmt) if m)


def batch_groups(
    session: Session, shot_ids: Sequence[int]
) -> list[tuple[tuple[Any, ...], list[int]]]:
    """``shot_ids`` grouped by batch key (model first), ids ascending: shots with equal keys
    can share one GPU batch."""
    groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for part in id_chunks(sorted(set(shot_ids))):  # ascending ids, chunk after chunk
        stmt = select(Shot).where(Shot.id.in_(part)).order_by(Shot.id)
        for shot in session.scalars(stmt):
            groups[shot_params(shot).batch_key()].append(shot.id)
    return list(groups.items())


def state_counts(session: Session, shot_ids: Sequence[int]) -> Counter[str]:
    """How many of ``shot_ids`` are in each state."""
    counts: Counter[str] = Counter()
    for part in id_chunks(shot_ids):
        stmt = select(Shot.state, func.count()).where(Shot.id.in_(part)).group_by(Shot.state)
        counts.update({state: n for state, n in session.execute(stmt)})
    return counts


def failures(session: Session, shot_ids: Sequence[int], limit: int = 50) -> list[dict[str, Any]]:
    """The failed ones among ``shot_ids``, with attempts and reason."""
    out: list[dict[str, Any]] = []
    for part in id_chunks(shot_ids):
        stmt = select(Shot.id, Shot.attempts, Shot.error, Shot.error_kind).where(
            Shot.id.in_(part), Shot.state == S.failed
        )
        out += [
            {"shot_id": i, "attempts": a, "error": e, "kind": k}
            for i, a, e, k in session.execute(stmt)
        ]
    return out[:limit]


def mark_enqueued(session: Session, shot_ids: Sequence[int]) -> None:
    """Record that generate messages for these shots are being sent (``enqueued_at``)."""
    now = utcnow()
    for part in id_chunks(shot_ids):
        session.execute(
            update(Shot)
            .where(Shot.id.in_(part))
            .values(enqueued_at=now, updated_at=Shot.updated_at)
            .execution_options(synchronize_session=False)
        )


def take_stalled(
    session: Session,
    cutoff: datetime,
    generating_cutoff: datetime,
    shot_ids: Sequence[int] | None = None,
) -> dict[str, list[int]]:
    """Shots untouched since ``cutoff`` (``generating_cutoff`` for a shot being generated),
    by state, and touch them so a second sweep does not take the same shots straight away.

    Without ``shot_ids`` (fleet-wide) a planned shot nobody ever enqueued is not stalled, it
    is waiting for `shotline run`; shots handed back after an attempt count, and so do shots
    enqueued before ``generating_cutoff`` (the visibility window) and never attempted: their
    message was lost (a broker restart drops what it had queued).
    """
    stmt = select(Shot.id, Shot.state).where(
        ((Shot.state.in_([str(w) for w in _RESENT])) & (Shot.updated_at < cutoff))
        | ((Shot.state == S.generating) & (Shot.updated_at < generating_cutoff))
    )
    if shot_ids is not None:
        rows = [
            row
            for part in id_chunks(shot_ids)
            for row in session.execute(stmt.where(Shot.id.in_(part))).all()
        ]
        rows.sort(key=lambda r: r[0])
    else:
        lost = Shot.enqueued_at.is_not(None) & (Shot.enqueued_at < generating_cutoff)
        stmt = stmt.where((Shot.state != S.planned) | (Shot.attempts > 0) | lost)
        rows = list(session.execute(stmt.order_by(Shot.id)).all())
    for part in id_chunks(r[0] for r in rows):  # one UPDATE per chunk, not a load per shot
        session.execute(
            update(Shot)
            .where(Shot.id.in_(part))
            .values(updated_at=utcnow())
            .execution_options(synchronize_session="fetch")
        )
    by_state: dict[str, list[int]] = defaultdict(list)
    for sid, state in rows:
        by_state[state].append(sid)
    return dict(by_state)
