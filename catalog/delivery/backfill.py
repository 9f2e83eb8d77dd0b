"""The current assets of a brand that lack some of the (channel, rendition) files its config
asks for: published before the channel was configured. ``renditions backfill`` reads them a
keyset page at a time (bounded memory whatever the catalog's size)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from catalog.delivery.current import asset_join, current_clause
from catalog.models import Asset, AssetRendition, Product, ProductRevision, Shot
from catalog.shots import ShotInfo, shot_info

Pair = tuple[str, str]  # (channel, rendition name)


@dataclass(frozen=True)
class Lacking:
    """A current asset, where its master is and which of the wanted pairs it lacks."""

    asset_id: int
    master_key: str
    info: ShotInfo
    missing: frozenset[Pair]


def count_current(session: Session, brand_id: int) -> int:
    stmt = (
        select(func.count(Asset.id))
        .join(Shot, Shot.id == Asset.shot_id)
        .join(ProductRevision, ProductRevision.id == Shot.product_revision_id)
        .join(Product, Product.id == ProductRevision.product_id)
        .where(Shot.brand_id == brand_id, current_clause())
    )
    return int(session.scalar(stmt) or 0)


def lacking_page(
    session: Session, brand_id: int, wanted: Sequence[Pair], after: int, page: int
) -> tuple[list[Lacking], int | None, int]:
    """One page of ``page`` current assets with ids above ``after``, by asset id: those that
    lack a wanted pair, the last asset id read (None: no more) and how many were read."""
    stmt = (
        asset_join()
        .where(Shot.brand_id == brand_id, current_clause(), Asset.id > after)
        .order_by(Asset.id)
        .limit(page)
    )
    rows = session.execute(stmt).all()
    if not rows:
        return [], None, 0
    ids = [a.id for a, *_ in rows]
    have: dict[int, set[Pair]] = {i: set() for i in ids}
    pairs = select(AssetRendition.asset_id, AssetRendition.channel, AssetRendition.name).where(
        AssetRendition.asset_id.in_(ids)
    )
    for aid, channel, name in session.execute(pairs):
        have[aid].add((channel, name))
    infos = shot_info(session, [shot for _, shot, *_ in rows])
    out = []
    for asset, shot, *_ in rows:
        missing = frozenset(p for p in wanted if p not in have[asset.id])
        if missing:
            out.append(Lacking(asset.id, asset.key, infos[shot.id], missing))
    return out, ids[-1], len(rows)
