"""The rows the Shopify and Merchant Center exports stream: one per current asset that has
the channel's feed rendition, ordered by product so a writer can number images per handle
and group offers without holding the catalog in memory.

Recalled and superseded assets never appear (``catalog.delivery.current``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from catalog.delivery.current import current_clause
from catalog.models import (
    Asset,
    AssetRecall,
    AssetRendition,
    Brand,
    Product,
    ProductRevision,
    Shot,
)

STREAM_ROWS = 2000  # rows per fetch: bounded memory whatever the catalog's size


@dataclass(frozen=True)
class ExportRow:
    asset_id: int
    shot_id: int
    product_id: int
    handle: str  # the product key (Shopify Handle, GMC item_group_id or id)
    data: Mapping[str, Any]  # the current revision's normalized product
    variant: Mapping[str, Any]  # the shot's visual variant: options, skus
    template: str
    key: str  # the channel rendition's object key
    published_at: datetime


def _filters(brand_id: int, since: datetime | None, import_run: int | None) -> list[Any]:
    where: list[Any] = [Shot.brand_id == brand_id, current_clause()]
    if since is not None:
        where.append(Asset.published_at >= since)
    if import_run is not None:
        where.append(ProductRevision.import_run_id == import_run)
    return where


def export_rows(
    session: Session,
    brand_id: int,
    channel: str,
    rendition: str,
    *,
    since: datetime | None = None,
    import_run: int | None = None,
) -> Iterator[ExportRow]:
    """Current assets of ``brand_id`` with their ``channel``/``rendition`` file, streamed."""
    stmt = (
        select(
            Asset.id,
            Shot.id,
            Product.id,
            Product.sku,
            ProductRevision.data,
            Shot.variant,
            Shot.template_name,
            AssetRendition.key,
            Asset.published_at,
        )
        .join(Shot, Shot.id == Asset.shot_id)
        .join(ProductRevision, ProductRevision.id == Shot.product_revision_id)
        .join(Product, Product.id == ProductRevision.product_id)
        .join(
            AssetRendition,
            and_(
                AssetRendition.asset_id == Asset.id,
                AssetRendition.channel == channel,
                AssetRendition.name == rendition,
            ),
        )
        .where(*_filters(brand_id, since, import_run))
        .order_by(Product.id, Shot.template_name, Shot.id)
        .execution_options(stream_results=True, yield_per=STREAM_ROWS)
    )
    for row in session.execute(stmt):
        yield ExportRow(*row)


def missing_renditions(
    session: Session,
    brand_id: int,
    channel: str,
    rendition: str,
    *,
    since: datetime | None = None,
    import_run: int | None = None,
) -> int:
    """Current assets without that rendition (published before the channel was configured)."""
    has = (
        select(AssetRendition.id)
        .where(
            AssetRendition.asset_id == Asset.id,
            AssetRendition.channel == channel,
            AssetRendition.name == rendition,
        )
        .exists()
    )
    stmt = (
        select(func.count(Asset.id))
        .join(Shot, Shot.id == Asset.shot_id)
        .join(ProductRevision, ProductRevision.id == Shot.product_revision_id)
        .join(Product, Product.id == ProductRevision.product_id)
        .where(*_filters(brand_id, since, import_run), ~has)
    )
    return int(session.scalar(stmt) or 0)


def brand_id_of(session: Session, name: str) -> int | None:
    return session.scalar(select(Brand.id).where(Brand.name == name))


def feed_fingerprint(session: Session, brand_id: int) -> str:
    """What a brand's feeds depend on, in three numbers: its newest asset (a publication, which
    may supersede an older one), its newest recall and its newest product revision (an import
    that changes what is current). Equal fingerprints: a feed written at the first is still
    right at the second. Publications only add rows, so the newest id moves on every one."""
    newest_asset = session.scalar(
        select(func.max(Asset.id))
        .join(Shot, Shot.id == Asset.shot_id)
        .where(Shot.brand_id == brand_id)
    )
    newest_recall = session.scalar(
        select(func.max(AssetRecall.id))
        .join(Asset, Asset.id == AssetRecall.asset_id)
        .join(Shot, Shot.id == Asset.shot_id)
        .where(Shot.brand_id == brand_id)
    )
    newest_revision = session.scalar(
        select(func.max(ProductRevision.id))
        .join(Product, Product.id == ProductRevision.product_id)
        .where(Product.brand_id == brand_id)
    )
    return f"a{newest_asset or 0}-r{newest_recall or 0}-v{newest_revision or 0}"
