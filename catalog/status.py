"""Where the line stands: counts by state, recent throughput, failures with their reasons."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from catalog.models import Asset, Brand, FilterResult, Generation, Shot, ShotState, utcnow


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
        ("gated", FilterResult, FilterResult.created_at),
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
        select(Shot.id, Shot.attempts, Shot.error, Shot.updated_at)
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
            "at": at.isoformat() if at else None,
        }
        for sid, attempts, error, at in session.execute(stmt)
    ]


def status_report(
    session: Session, brand: str | None = None, minutes: int = 5, failures: int = 20
) -> dict[str, Any]:
    counts = counts_by_state(session, brand)
    return {
        "brand": brand,
        "total": sum(counts.values()),
        "counts": counts,
        "throughput": throughput(session, minutes, brand),
        "failures": recent_failures(session, failures, brand),
    }


def shot_states(session: Session, shot_ids: Sequence[int]) -> dict[int, tuple[str, str | None]]:
    """The state and error of each of ``shot_ids`` (after ``review approve`` publishes)."""
    rows = session.execute(select(Shot.id, Shot.state, Shot.error).where(Shot.id.in_(shot_ids)))
    return {sid: (state, error) for sid, state, error in rows}
