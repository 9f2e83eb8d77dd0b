"""Which published asset is current.

For each (product, visual variant, template) the current asset is the one published from the
product's current revision (planning makes at most one shot per revision, variant and
template, so there is at most one). An asset of an older revision is superseded by the
current revision; a recalled asset (``asset_recalls``) is neither, whatever its revision.
This is computed from the rows, never stored, so a re-import supersedes at once and nothing
can drift.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, select
from sqlalchemy.orm import Session

from catalog.models import Asset, AssetRecall, Product, ProductRevision, Shot

CURRENT, SUPERSEDED, RECALLED = "current", "superseded", "recalled"


def not_recalled() -> ColumnElement[bool]:
    return ~exists().where(AssetRecall.asset_id == Asset.id)


def current_clause() -> ColumnElement[bool]:
    """For a query joining Asset, Shot, ProductRevision and Product: the current assets."""
    return and_(Product.current_revision_id == Shot.product_revision_id, not_recalled())


def superseded_clause() -> ColumnElement[bool]:
    return and_(Product.current_revision_id != Shot.product_revision_id, not_recalled())


def asset_join() -> Any:
    """``select(...)`` starting point: assets with their shot, revision and product."""
    return (
        select(Asset, Shot, ProductRevision, Product)
        .join(Shot, Shot.id == Asset.shot_id)
        .join(ProductRevision, ProductRevision.id == Shot.product_revision_id)
        .join(Product, Product.id == ProductRevision.product_id)
    )


@dataclass(frozen=True)
class Recall:
    at: datetime
    by: str
    reason: str
    objects: str

    def to_json(self) -> dict[str, Any]:
        at = self.at.isoformat()
        return {"at": at, "by": self.by, "reason": self.reason, "objects": self.objects}


@dataclass(frozen=True)
class AssetStatus:
    asset_id: int
    status: str  # current | superseded | recalled
    revision: int  # the revision number the asset was made from
    current_revision: int | None  # the product's current revision number
    superseded_by_revision_id: int | None
    recall: Recall | None

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "revision": self.revision,
            "current_revision": self.current_revision,
            "superseded_by_revision_id": self.superseded_by_revision_id,
            "recall": None if self.recall is None else self.recall.to_json(),
        }


def first_recalls(session: Session, asset_ids: Sequence[int]) -> dict[int, Recall]:
    """The first recall event of each recalled asset among ``asset_ids``."""
    rows = session.scalars(
        select(AssetRecall)
        .where(AssetRecall.asset_id.in_(list(asset_ids)))
        .order_by(AssetRecall.asset_id, AssetRecall.id)
    )
    out: dict[int, Recall] = {}
    for r in rows:
        out.setdefault(r.asset_id, Recall(r.created_at, r.recalled_by, r.reason, r.objects))
    return out


def asset_statuses(session: Session, asset_ids: Sequence[int]) -> dict[int, AssetStatus]:
    """Current, superseded or recalled, for each asset among ``asset_ids``."""
    if not asset_ids:
        return {}
    cur = ProductRevision.__table__.alias("cur")
    rows = session.execute(
        select(Asset.id, ProductRevision.id, ProductRevision.revision, cur.c.id, cur.c.revision)
        .join(Shot, Shot.id == Asset.shot_id)
        .join(ProductRevision, ProductRevision.id == Shot.product_revision_id)
        .join(Product, Product.id == ProductRevision.product_id)
        .outerjoin(cur, cur.c.id == Product.current_revision_id)
        .where(Asset.id.in_(list(asset_ids)))
    ).all()
    recalls = first_recalls(session, asset_ids)
    out = {}
    for aid, rev_id, rev_no, cur_id, cur_no in rows:
        recall = recalls.get(aid)
        stale = cur_id is not None and cur_id != rev_id
        status = RECALLED if recall else SUPERSEDED if stale else CURRENT
        out[aid] = AssetStatus(aid, status, rev_no, cur_no, cur_id if stale else None, recall)
    return out
