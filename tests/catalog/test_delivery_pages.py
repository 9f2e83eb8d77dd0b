"""``export_rows`` reads a keyset page of products at a time: whatever the page size, the rows
are the same, in the same order (product, template, shot), with recalled assets left out,
and a product's rows never straddle two pages' worth of writer groups."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from catalog.db import make_engine, make_sessionmaker
from catalog.delivery.exports import brand_id_of, export_rows
from tests.benchmarks.bench_delivery import seed
from tests.conftest import create_pg_database, drop_pg_database

PRODUCTS, PER_PRODUCT = 7, 3


@pytest.fixture(scope="module")
def seeded() -> Iterator[str]:
    url = create_pg_database("shotline_pages")
    seed(url, PRODUCTS, PER_PRODUCT)
    with psycopg.connect(url, autocommit=True) as conn:  # recall product 4's second asset
        conn.execute(
            "INSERT INTO asset_recalls (asset_id, reason, recalled_by, selector, objects, "
            "created_at) SELECT a.id, 'test', 'me', '{}', 'kept', now() FROM assets a "
            "JOIN shots s ON s.id = a.shot_id JOIN product_revisions r ON "
            "r.id = s.product_revision_id JOIN products p ON p.id = r.product_id "
            "WHERE p.sku = 'prod-0000004' AND s.template_name = 't2'"
        )
    yield url
    drop_pg_database(url)


def _rows(url: str, page: int) -> list[tuple[object, ...]]:
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as s:
            bid = brand_id_of(s, "bench")
            assert bid is not None
            return [
                (
                    r.asset_id,
                    r.shot_id,
                    r.product_id,
                    r.handle,
                    dict(r.data),
                    r.variant,
                    r.template,
                    r.key,
                )
                for r in export_rows(s, bid, "gmc", "feed", page=page)
            ]
    finally:
        engine.dispose()


def test_pages_give_the_same_rows(seeded: str) -> None:
    whole = _rows(seeded, 1000)
    assert len(whole) == PRODUCTS * PER_PRODUCT - 1  # the recalled asset is left out
    order = [(r[2], r[6], r[1]) for r in whole]
    assert order == sorted(order)
    assert [r for r in whole if r[3] == "prod-0000004"] and all(
        not (r[3] == "prod-0000004" and r[6] == "t2") for r in whole
    )
    assert whole[0][4]["title"] == "Organic tee prod-0000001"
    assert whole[0][5]["skus"] == ["prod-0000001-RED"]
    assert all(r[7].endswith(".webp") for r in whole)  # the gmc rendition, not shopify's
    for page in (1, 2, 3, 6, 7):
        assert _rows(seeded, page) == whole, page
