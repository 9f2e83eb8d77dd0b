"""Recall: published assets taken out of every later export, as append-only events that
name who (the authenticated connection, never a claimed name), when and why."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from catalog.delivery.current import first_recalls
from catalog.delivery.renditions import renditions_of
from catalog.lineage import assets_by_lora
from catalog.models import Asset, AssetRecall, utcnow
from catalog.review import connection_identity
from catalog.shots import id_chunks


class RecallError(ValueError):
    """An id that names no published asset or shot (one line)."""


@dataclass
class RecallResult:
    recalled: list[int] = field(default_factory=list)  # asset ids recalled now
    already: list[int] = field(default_factory=list)  # recalled before: no new event
    keys: dict[int, list[str]] = field(default_factory=dict)  # asset -> master + renditions
    by: str = ""


def select_assets(
    session: Session,
    asset_ids: Sequence[int] = (),
    shot_ids: Sequence[int] = (),
    lora: tuple[str, str | None] | None = None,
) -> list[int]:
    """The asset ids the selectors name; ``RecallError`` for an id that names nothing."""
    found: list[int] = []
    for chunk in id_chunks(asset_ids):
        have = set(session.scalars(select(Asset.id).where(Asset.id.in_(chunk))))
        missing = [i for i in chunk if i not in have]
        if missing:
            raise RecallError(f"asset {missing[0]}: no such published asset")
        found += chunk
    for chunk in id_chunks(shot_ids):
        pairs = session.execute(select(Asset.shot_id, Asset.id).where(Asset.shot_id.in_(chunk)))
        rows: dict[int, int] = {sid: aid for sid, aid in pairs.all()}
        missing = [i for i in chunk if i not in rows]
        if missing:
            raise RecallError(f"shot {missing[0]}: has no published asset")
        found += [rows[i] for i in chunk]
    if lora is not None:
        found += [int(r["asset_id"]) for r in assets_by_lora(session, lora[0], lora[1])]
    return list(dict.fromkeys(found))


def recall(
    session: Session,
    asset_ids: Sequence[int],
    reason: str,
    selector: dict[str, Any],
    *,
    delete_objects: bool = False,
) -> RecallResult:
    """One ``asset_recalls`` event per asset not recalled before; the object keys of each
    (master and renditions) for the caller to delete after the commit."""
    res = RecallResult(by=connection_identity(session))
    now = utcnow()
    for chunk in id_chunks(asset_ids):
        before = first_recalls(session, chunk)
        rends = renditions_of(session, chunk)
        rows = session.execute(select(Asset.id, Asset.key).where(Asset.id.in_(chunk))).all()
        masters: dict[int, str] = {aid: key for aid, key in rows}
        for aid in chunk:
            if aid in before:
                res.already.append(aid)
                continue
            session.add(
                AssetRecall(
                    asset_id=aid,
                    reason=reason,
                    recalled_by=res.by,
                    selector=selector,
                    objects="deleted" if delete_objects else "kept",
                    created_at=now,
                )
            )
            res.recalled.append(aid)
            res.keys[aid] = [masters[aid], *dict.fromkeys(r.key for r in rends[aid])]
    session.flush()
    return res
