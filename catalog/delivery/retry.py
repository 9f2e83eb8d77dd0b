"""Retrying failed shots once their cause may be gone (a source fixed, a LoRA replaced).

``shotline run --retry-failed [--kind KIND] [--brand B]`` sends failed shots back to
``planned`` with a fresh attempt count; the error each had is kept first in
``shot_error_history`` (append-only, with who retried it), so no earlier reason is lost.

Retryable: a failed shot that never got a generation row (it failed while preparing or
generating), of any kind but ``duplicate`` (the same seed makes the same image again). A shot
that failed after generating (at publish) keeps its rows: generating again would collide
with them, so it is not retried here.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from catalog.models import Brand, Generation, Shot, ShotErrorHistory, ShotState, utcnow
from catalog.review import connection_identity
from catalog.shots import transition
from pipeline.failures import FailureKind

NOT_RETRYABLE = frozenset({FailureKind.duplicate.value})
RETRY_CHUNK = 1000


def _retryable(brand: str | None, kind: str | None) -> list[Any]:
    where: list[Any] = [
        Shot.state == ShotState.failed.value,
        ~select(Generation.id).where(Generation.shot_id == Shot.id).exists(),
        func.coalesce(Shot.error_kind, "unknown").not_in(list(NOT_RETRYABLE)),
    ]
    if brand is not None:
        where.append(Shot.brand_id.in_(select(Brand.id).where(Brand.name == brand)))
    if kind is not None:
        where.append(func.coalesce(Shot.error_kind, "unknown") == kind)
    return where


def retryable_counts(session: Session, brand: str | None = None) -> dict[str, int]:
    """Failed shots ``--retry-failed`` would re-queue, by failure kind."""
    kind = func.coalesce(Shot.error_kind, "unknown")
    rows = session.execute(
        select(kind, func.count()).where(*_retryable(brand, None)).group_by(kind)
    )
    return {str(k): int(n) for k, n in sorted(rows, key=lambda r: -r[1])}


def requeue_failed(
    session: Session, brand: str | None = None, kind: str | None = None
) -> dict[str, int]:
    """failed -> planned for every retryable shot (of ``kind``); returns counts by kind."""
    who = connection_identity(session)
    counts: dict[str, int] = {}
    now = utcnow()
    while True:
        stmt = select(Shot).where(*_retryable(brand, kind)).order_by(Shot.id).limit(RETRY_CHUNK)
        shots = list(session.scalars(stmt))
        if not shots:
            return counts
        for shot in shots:
            session.add(
                ShotErrorHistory(
                    shot_id=shot.id,
                    error=shot.error,
                    error_kind=shot.error_kind,
                    attempts=shot.attempts,
                    failed_at=shot.updated_at,
                    retried_by=who,
                    retried_at=now,
                )
            )
            k = shot.error_kind or "unknown"
            counts[k] = counts.get(k, 0) + 1
            transition(shot, ShotState.planned)  # clears error and kind
            shot.attempts = 0  # a fresh budget: the history keeps the spent one
        session.flush()


def error_history(session: Session, shot_id: int) -> list[dict[str, object]]:
    rows = session.scalars(
        select(ShotErrorHistory)
        .where(ShotErrorHistory.shot_id == shot_id)
        .order_by(ShotErrorHistory.id)
    )
    return [
        {
            "error": r.error,
            "kind": r.error_kind,
            "attempts": r.attempts,
            "failed_at": r.failed_at.isoformat() if r.failed_at else None,
            "retried_by": r.retried_by,
            "retried_at": r.retried_at.isoformat(),
        }
        for r in rows
    ]
