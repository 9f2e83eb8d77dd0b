"""The database side of ``shotline gate rescore``: which shots, and recording a new pass.

Every pass appends a ``filter_results`` row and makes it the current one; earlier rows stay
(``Shot.filter_history``). State changes follow ``pipeline.gate.rescore.outcome``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import select, update
from sqlalchemy.orm import Session, selectinload

from catalog.models import Brand, FilterResult, Shot, ShotState, Watermark, utcnow
from catalog.shots import lock_shots, transition
from pipeline.gate.rescore import REJECTED
from pipeline.types import FilterDecision

S = ShotState
# The states a gate decision still stands behind.
RESCORE_STATES = (S.pending_review, S.rejected, S.approved, S.published)


def rescore_candidates(
    session: Session, brand: str, shot_ids: Sequence[int] | None = None
) -> list[Shot]:
    """The brand's gated shots (of ``shot_ids`` when given), with their current filter
    result and final-file row."""
    stmt = (
        select(Shot)
        .join(Brand, Brand.id == Shot.brand_id)
        .where(Brand.name == brand, Shot.state.in_([str(s) for s in RESCORE_STATES]))
        .options(selectinload(Shot.filter_result), selectinload(Shot.watermark))
        .order_by(Shot.id)
    )
    if shot_ids is not None:
        stmt = stmt.where(Shot.id.in_(list(shot_ids)))
    return [shot for shot in session.scalars(stmt) if shot.filter_result is not None]


def final_key(session: Session, shot_id: int) -> str | None:
    return session.scalar(select(Watermark.image_key).where(Watermark.shot_id == shot_id))


def record_pass(session: Session, shot_id: int, decision: FilterDecision, result: str) -> bool:
    """Append ``decision`` as the shot's current filter result and apply ``result`` (an
    ``outcome`` code). False when the shot left the rescorable states meanwhile."""
    locked = lock_shots(session, [shot_id], RESCORE_STATES)
    if not locked:
        return False
    shot = locked[0]
    session.execute(
        update(FilterResult)
        .where(FilterResult.shot_id == shot_id, FilterResult.current)
        .values(current=False)
    )
    session.add(
        FilterResult(
            shot_id=shot_id,
            current=True,
            policy_version=decision.policy_version[:200],
            clip_model=decision.clip_model[:200],
            scores=list(decision.scores),
            decision=decision.decision,
            reasons=list(decision.reasons),
            created_at=utcnow(),
        )
    )
    session.flush()
    if result == REJECTED and shot.state == S.pending_review:
        transition(shot, S.rejected)  # the reasons are on the new filter_results row
    return True


def passes_since(session: Session, before: Mapping[int, int]) -> dict[int, FilterDecision]:
    """The shots (ids of ``before``: shot id -> its current filter result's id then) whose
    current filter result is a newer pass now, as decisions: what a re-encode on the cpu
    queue has recorded so far."""
    rows = session.scalars(
        select(FilterResult).where(FilterResult.shot_id.in_(list(before)), FilterResult.current)
    )
    return {
        fr.shot_id: FilterDecision(
            decision=fr.decision,  # type: ignore[arg-type]
            scores=list(fr.scores or []),
            reasons=list(fr.reasons or []),
            policy_version=fr.policy_version,
            clip_model=fr.clip_model,
        )
        for fr in rows
        if fr.id != before[fr.shot_id]
    }
