"""The rows the Shopify and Merchant Center exports stream: one per current asset that has
the channel's feed rendition, ordered by product so a writer can number images per handle
and group offers without holding the catalog in memory.

Recalled and superseded assets never appear (``catalog.delivery.current``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Text, and_, cast, func, select
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

PAGE_PRODUCTS = 2000  # products per keyset page: bounded memory whatever the catalog's size


class _PageData:
    """The current revisions' data of one page of products, as JSON text by revision id,
    read on first use with one query: once per product, not once per asset row, and never
    for a feed that does not read it (Merchant Center without an ``offer_id`` template)."""

    def __init__(self, session: Session, brand_id: int, lo: int, hi: int) -> None:
        self._session, self._brand_id, self._lo, self._hi = session, brand_id, lo, hi
        self._texts: dict[int, str] | None = None

    def text(self, revision_id: int) -> str | None:
        conn = self._session.connection()
        if self._texts is None:
            page = (
                select(ProductRevision.id, cast(ProductRevision.data, Text))
                .join(Product, Product.current_revision_id == ProductRevision.id)
                .where(
                    Product.brand_id == self._brand_id,
                    Product.id.between(self._lo, self._hi),
                    ProductRevision.product_id.between(self._lo, self._hi),
                )
            )
            self._texts = {rev: text for rev, text in conn.execute(page)}
        text = self._texts.get(revision_id)
        if text is None:  # an import made another revision current since the rows were read
            one = select(cast(ProductRevision.data, Text)).where(ProductRevision.id == revision_id)
            text = conn.execute(one).scalar()
        return text


class _ProductData:
    """One product's data, decoded on first use and shared by the product's rows."""

    __slots__ = ("_page", "_revision_id", "_value")

    def __init__(self, page: _PageData, revision_id: int) -> None:
        self._page, self._revision_id, self._value = page, revision_id, None

    def value(self) -> Any:
        if self._value is None:
            text = self._page.text(self._revision_id)
            self._value = None if text is None else json.loads(text)
        return self._value


class ExportRow:
    """One current asset and its channel rendition (the writers' ``FeedRow``). A plain
    slotted class, not a dataclass: hundreds of thousands are built per export."""

    __slots__ = (
        "_data",
        "asset_id",
        "handle",
        "key",
        "product_id",
        "published_at",
        "shot_id",
        "template",
        "variant",
    )

    def __init__(
        self,
        asset_id: int,
        shot_id: int,
        product_id: int,
        handle: str,  # the product key (Shopify Handle, GMC item_group_id or id)
        data: _ProductData,  # the current revision's normalized product
        variant: Mapping[str, Any],  # the shot's visual variant: options, skus
        template: str,
        key: str,  # the channel rendition's object key
        published_at: datetime,
    ) -> None:
        self.asset_id, self.shot_id, self.product_id, self.handle = (
            asset_id,
            shot_id,
            product_id,
            handle,
        )
        self._data, self.variant, self.template, self.key = data, variant, template, key
        self.published_at = published_at

    @property
    def data(self) -> Mapping[str, Any]:
        return self._data.value()  # type: ignore[no-any-return]


def _filters(brand_id: int, since: datetime | None, import_run: int | None) -> list[Any]:
    where: list[Any] = [Shot.brand_id == brand_id, current_clause()]
    if since is not None:
        where.append(Asset.published_at >= since)
    if import_run is not None:
        where.append(ProductRevision.import_run_id == import_run)
    return where


def _page_query(channel: str, rendition: str, where: list[Any]) -> Any:
    """The rows of one page of products (``where`` bounds the product ids), as plain columns
    (the variant as JSON text, decoded in Python), ordered for the writers. The product data
    comes apart (``_PageData``): repeated per asset, its JSON output was a third of the
    query's time."""
    return (
        select(
            Asset.id,
            Shot.id,
            Product.id,
            Product.sku,
            Shot.product_revision_id,
            cast(Shot.variant, Text),
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
        .where(*where)
        .order_by(Product.id, Shot.template_name, Shot.id)
    )


def export_rows(
    session: Session,
    brand_id: int,
    channel: str,
    rendition: str,
    *,
    since: datetime | None = None,
    import_run: int | None = None,
    page: int = PAGE_PRODUCTS,
) -> Iterator[ExportRow]:
    """Current assets of ``brand_id`` with their ``channel``/``rendition`` file, ordered by
    product, template and shot: a keyset page of ``page`` products at a time (one query for
    the page's id range, one for its rows, one for its products' data when a writer reads
    it), so Postgres sorts a page in memory rather than the whole export on disk, and no
    ORM object is built."""
    where = _filters(brand_id, since, import_run)
    after = 0
    while True:
        ids = session.scalars(
            select(Product.id)
            .where(Product.brand_id == brand_id, Product.id > after)
            .order_by(Product.id)
            .limit(page)
        ).all()
        if not ids:
            return
        lo, hi = ids[0], ids[-1]
        # The revisions' bound too: without it Postgres hashes every revision once per page.
        bounds = [Product.id.between(lo, hi), ProductRevision.product_id.between(lo, hi)]
        # Core execution: plain rows, no ORM result machinery.
        stmt = _page_query(channel, rendition, [*where, *bounds])
        rows = session.connection().execute(stmt).all()
        page_data, variants = _PageData(session, brand_id, lo, hi), _VariantCache()
        data, last_product = _ProductData(page_data, 0), None
        for aid, sid, pid, sku, rev, variant_text, template, key, published in rows:
            if pid != last_product:
                data, last_product = _ProductData(page_data, rev), pid
            yield ExportRow(
                aid, sid, pid, sku, data, variants(variant_text), template, key, published
            )
        if len(ids) < page:
            return
        after = ids[-1]


class _VariantCache:
    """Decoded shot variants by their JSON text: a product's shots of one variant share it."""

    def __init__(self) -> None:
        self._last: tuple[str | None, Any] = (None, None)

    def __call__(self, text: str | None) -> Any:
        if text is None:
            return None
        if self._last[0] != text:
            self._last = (text, json.loads(text))
        return self._last[1]


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
