"""The lookups users do are served by migration 0013's indexes: the planner's own word.

A fresh Postgres database gets 60,000 shots (6,000 products x 10 templates, two brands, most
shots published) in set-based SQL and ``ANALYZE``. The statements the code itself sends are
recorded (``before_cursor_execute``) while ``lineage_for`` and ``list_shots`` run, and each is
``EXPLAIN (FORMAT JSON)``-ed with the parameters it was sent with. At this size a lookup with
no index is a sequential scan of ``shots`` (checked too: the index is dropped in a
transaction that is rolled back), so the plan names the index only because 0013 made it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from catalog.db import make_engine
from catalog.lineage import lineage_for
from catalog.review import list_shots
from tests.conftest import create_pg_database, drop_pg_database

PRODUCTS, TEMPLATES = 6_000, 10

SEED = f"""
INSERT INTO brands (name, config_digest, version, config, created_at, updated_at)
VALUES ('ix-a', repeat('0', 64), 1, '{{}}', now(), now()),
       ('ix-b', repeat('0', 64), 1, '{{}}', now(), now());
INSERT INTO import_runs (source_uri, status, rows_total, rows_error, products_seen,
    revisions_new, unchanged, warnings, started_at)
VALUES ('ix.csv', 'succeeded', 0, 0, 0, 0, 0, '[]', now());
INSERT INTO products (brand_id, sku, created_at, updated_at)
SELECT (SELECT min(id) FROM brands) + mod(g, 2), 'prod-' || lpad(g::text, 6, '0'), now(), now()
FROM generate_series(1, {PRODUCTS}) g;
INSERT INTO product_revisions (product_id, revision, content_hash, data, import_run_id,
    source_line, created_at)
SELECT id, 1, md5(sku), jsonb_build_object('title', sku), (SELECT max(id) FROM import_runs),
    id + 1, now()
FROM products;
INSERT INTO shots (brand_id, product_revision_id, variant_key, variant, brand_config_digest,
    template_name, template_digest, prompt, negative_prompt, sanitizer_removals,
    prompt_warnings, seed, model_id, adapters, width, height, steps, guidance, scheduler,
    state, attempts, packshot, created_at, updated_at)
SELECT p.brand_id, r.id, 'Color=Red',
    jsonb_build_object('sku', p.sku || '-RED', 'skus', jsonb_build_array(p.sku || '-RED'),
        'options', jsonb_build_object('Color', 'Red')),
    repeat('0', 64), 't' || t, repeat('1', 64), 'a studio photo of ' || p.sku, '', '[]', '[]',
    r.id * 16 + t, 'tiny', '[]', 64, 64, 2, 1.0, 'euler',
    CASE WHEN mod(r.id, 50) = 0 THEN 'pending_review' ELSE 'published' END, 1, '{{}}', now(), now()
FROM product_revisions r JOIN products p ON p.id = r.product_id,
    generate_series(1, {TEMPLATES}) t;
ANALYZE;
"""


@pytest.fixture(scope="module")
def big_engine() -> Iterator[Engine]:
    url = create_pg_database("shotline_ix")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            for stmt in SEED.split(";\n"):
                if stmt.strip():
                    conn.exec_driver_sql(stmt)
        yield engine
    finally:
        engine.dispose()
        drop_pg_database(url)


def _sent(engine: Engine, call: Any) -> list[tuple[str, Any]]:
    """The (statement, parameters) the code sends to Postgres while ``call(session)`` runs."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: Any):  # type: ignore[no-untyped-def]
        if not statement.lstrip().upper().startswith("EXPLAIN"):
            seen.append((statement, params))

    event.listen(engine, "before_cursor_execute", record)
    try:
        with Session(engine) as session:
            call(session)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return seen


def _one(sent: list[tuple[str, Any]], *needles: str) -> tuple[str, Any]:
    hits = [(s, p) for s, p in sent if all(n in s for n in needles)]
    assert len(hits) == 1, f"expected one statement with {needles}, got {len(hits)}"
    return hits[0]


def _plan(conn: Any, statement: str, params: Any) -> dict[str, Any]:
    row = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, params).scalar_one()
    doc = row if isinstance(row, list) else json.loads(row)
    return dict(doc[0]["Plan"])


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _indexes_used(plan: dict[str, Any]) -> set[str]:
    return {str(n["Index Name"]) for n in _nodes(plan) if "Index Name" in n}


def _seq_scanned(plan: dict[str, Any]) -> set[str]:
    return {str(n["Relation Name"]) for n in _nodes(plan) if n["Node Type"] == "Seq Scan"}


def _without(engine: Engine, index: str, statement: str, params: Any) -> dict[str, Any]:
    """The plan of the same statement with ``index`` gone (dropped, then rolled back)."""
    with engine.connect() as conn:
        trans = conn.begin()
        try:
            conn.exec_driver_sql(f"DROP INDEX {index}")
            return _plan(conn, statement, params)
        finally:
            trans.rollback()


def test_lineage_of_a_product_key_uses_ix_products_sku(big_engine: Engine) -> None:
    sent = _sent(big_engine, lambda s: lineage_for(s, "prod-004321"))
    statement, params = _one(sent, "products.sku =")
    with big_engine.connect() as conn:
        plan = _plan(conn, statement, params)
    assert "ix_products_sku" in _indexes_used(plan), plan
    assert not _seq_scanned(plan) & {"products", "shots"}, plan
    assert "products" in _seq_scanned(_without(big_engine, "ix_products_sku", statement, params))


def test_lineage_of_a_variant_sku_uses_the_variant_indexes(big_engine: Engine) -> None:
    found = {}

    def call(session: Session) -> None:
        found.update(lineage_for(session, "prod-001234-RED"))

    sent = _sent(big_engine, call)
    assert len(found["chains"]) == TEMPLATES  # the seeded shots of that variant, and only those
    statement, params = _one(sent, "variant ->> 'sku'")
    with big_engine.connect() as conn:
        plan = _plan(conn, statement, params)
    # One index for each side of the OR (the variant's sku, its visual variant's skus).
    assert {"ix_shots_variant_sku", "ix_shots_variant_skus"} <= _indexes_used(plan), plan
    assert "shots" not in _seq_scanned(plan), plan
    for index in ("ix_shots_variant_sku", "ix_shots_variant_skus"):
        assert "shots" in _seq_scanned(_without(big_engine, index, statement, params))


def test_review_list_by_brand_and_template_uses_the_template_index(big_engine: Engine) -> None:
    # `review list --brand ix-a --template t7`: pending shots (the command's default), a page.
    pages: list[list[Any]] = []

    def call(session: Session) -> None:
        pages.append(
            list_shots(session, brand="ix-a", template="t7", status="pending_review", limit=50)
        )

    sent = _sent(big_engine, call)
    assert len(pages[0]) == 50 and {s.template_name for s in pages[0]} == {"t7"}
    statement, params = _one(sent, "shots.template_name =", "LIMIT")
    with big_engine.connect() as conn:
        plan = _plan(conn, statement, params)
    assert "ix_shots_template_name_state_id" in _indexes_used(plan), plan
    assert "shots" not in _seq_scanned(plan), plan
