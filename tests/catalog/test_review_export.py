"""``review export`` reads columns, not ORM rows: its CSV must stay byte for byte what the
shots' loaded records say, for every filter, status (``superseded`` included) and page size.

The reference below rebuilds each row from ``list_shots`` (ORM objects, ``review_record``,
``shot_sku``), the way the export was written before it read columns.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

import pytest
from sqlalchemy.orm import Session

from catalog.delivery.current import CURRENT, RECALLED, first_recalls
from catalog.models import AssetRecall, FilterResult, ProductRevision, Shot
from catalog.review import (
    EXPORT_COLUMNS,
    REVIEW_STATES,
    SUPERSEDED,
    decisions_csv,
    escape_formula,
    list_shots,
    review_record,
)
from pipeline.delivery.urls import public_url
from tests.factories import (
    make_brand,
    make_filter_result,
    make_gated_shot,
    make_import_run,
    make_product,
    make_shot,
)

BASE = "https://cdn.example.com/media/"


def _reference_row(shot: Shot, recalled: set[int], base_url: str | None) -> dict[str, Any]:
    rec = review_record(shot)
    variant = shot.variant if isinstance(shot.variant, Mapping) else {}
    options = variant.get("options") if isinstance(variant.get("options"), Mapping) else {}
    product = shot.product_revision.product
    status = ""
    if shot.asset is not None:
        current = product.current_revision_id
        superseded = current not in (None, shot.product_revision_id)
        status = RECALLED if shot.asset.id in recalled else SUPERSEDED if superseded else CURRENT
    key = rec["asset_key"]
    row = {
        "shot_id": rec["id"],
        "sku": rec["sku"],
        "template": rec["template"],
        "state": rec["state"],
        "gate_decision": rec["gate_decision"] or "",
        "gate_reasons": "; ".join(str(r) for r in rec["reasons"]),
        "review_action": rec["review_action"] or "",
        "reviewer": rec["reviewer"] or "",
        "review_note": rec["review_note"] or "",
        "reviewed_at": rec["reviewed_at"] or "",
        "prompt": rec["prompt"],
        "asset_key": key or "",
        "handle": product.sku,
        "variant_key": shot.variant_key,
        "variant_options": "; ".join(f"{k}={v}" for k, v in (options or {}).items()),
        "asset_status": status,
        "public_url": public_url(base_url, key) if key and base_url else "",
    }
    return {k: escape_formula(v) for k, v in row.items()}


def _reference_csv(session: Session, base_url: str | None = None, **filters: Any) -> str:
    shots = list_shots(session, **filters)
    assets = [s.asset.id for s in shots if s.asset is not None]
    recalled = set(first_recalls(session, assets))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for shot in shots:
        writer.writerow(_reference_row(shot, recalled, base_url))
    return buf.getvalue()


def _catalog(session: Session) -> dict[str, Any]:
    """Shots in every review state, superseded and recalled ones, gate reasons and catalog
    text that look like formulas, variants with and without their own sku, several review
    events per shot, two brands, two import runs and two templates."""
    brand = make_brand(session)
    other = make_brand(session)
    run1, run2 = make_import_run(session, brand), make_import_run(session, brand)
    pending = make_gated_shot(
        session, brand=brand, import_run=run1, prompt="=HYPERLINK(1) studio photo"
    )
    # a rescore: the old decision is no longer current and must not show
    session.query(FilterResult).filter_by(shot_id=pending.id).update({"current": False})
    make_filter_result(session, pending, "pending_review", reasons=["=cmd|x", "+1", "@SUM(1)"])
    rejected = make_gated_shot(
        session,
        brand=brand,
        import_run=run2,
        decision="rejected",
        reviews=[("reject", "-mallory", "+bad"), ("reject", "alice", None)],
    )
    approved = make_gated_shot(
        session,
        brand=brand,
        import_run=run1,
        template="lifestyle",
        sku="@PROD",
        variant={"options": {"Color": "=Red", "Size": "M"}},  # no sku of its own
        reviews=[("reject", "bob", "too dark"), ("override", "alice", "-fine after all")],
        state="approved",
    )
    published = make_gated_shot(
        session, brand=brand, import_run=run2, published=True, reviews=[("approve", "carol", "")]
    )
    superseded = make_gated_shot(
        session, brand=brand, import_run=run1, published=True, reviews=[("approve", "bob", "ok")]
    )
    product = superseded.product_revision.product
    newer = ProductRevision(
        product_id=product.id, revision=2, content_hash="b" * 64, data={"key": product.sku}
    )
    session.add(newer)
    session.flush()
    product.current_revision_id = newer.id
    recalled = make_gated_shot(session, brand=brand, import_run=run2, published=True)
    assert recalled.asset is not None
    for reason in ("first", "second"):
        session.add(AssetRecall(asset_id=recalled.asset.id, reason=reason, recalled_by="alice"))
    # no gate decision and no review yet; a planned shot is no review state at all
    rev = make_product(session, brand, import_run=run1)
    bare = make_shot(session, rev, state="pending_review", prompt="-minus prompt")
    make_shot(session, rev, state="planned", template="lifestyle")
    elsewhere = make_gated_shot(session, brand=other)
    session.flush()
    session.expire_all()
    return {
        "brand": brand.name,
        "other": other.name,
        "runs": (run1.id, run2.id),
        "ids": {
            "pending": pending.id,
            "rejected": rejected.id,
            "approved": approved.id,
            "published": published.id,
            "superseded": superseded.id,
            "recalled": recalled.id,
            "bare": bare.id,
            "elsewhere": elsewhere.id,
        },
    }


def _rows(text: str) -> dict[int, dict[str, str]]:
    return {int(r["shot_id"]): r for r in csv.DictReader(io.StringIO(text))}


def test_export_cells(session: Session) -> None:
    """What the rows say, checked by hand: escaping, the latest event, sku, statuses."""
    cat = _catalog(session)
    ids = cat["ids"]
    rows = _rows(decisions_csv(session, BASE, brand=cat["brand"]))
    assert set(rows) == set(ids.values()) - {ids["elsewhere"]}
    pending = rows[ids["pending"]]
    assert pending["gate_reasons"] == "'=cmd|x; +1; @SUM(1)"
    assert pending["prompt"] == "'=HYPERLINK(1) studio photo"
    assert (pending["review_action"], pending["asset_status"], pending["public_url"]) == ("",) * 3
    rejected = rows[ids["rejected"]]
    assert (rejected["review_action"], rejected["reviewer"], rejected["review_note"]) == (
        "reject",
        "alice",
        "",
    )
    approved = rows[ids["approved"]]
    assert (approved["sku"], approved["handle"]) == ("'@PROD", "'@PROD")
    # (jsonb keeps its keys in its own order: the same order the ORM reads)
    assert sorted(approved["variant_options"].split("; ")) == ["Color==Red", "Size=M"]
    assert (approved["review_action"], approved["review_note"]) == ("override", "'-fine after all")
    assert rows[ids["published"]]["asset_status"] == CURRENT
    assert rows[ids["published"]]["public_url"].startswith(BASE + "brand-")
    assert rows[ids["superseded"]]["asset_status"] == SUPERSEDED
    assert rows[ids["recalled"]]["asset_status"] == RECALLED
    bare = rows[ids["bare"]]
    assert (bare["gate_decision"], bare["gate_reasons"], bare["prompt"]) == (
        "",
        "",
        "'-minus prompt",
    )


@pytest.mark.parametrize("page", [1, 2, 500])
def test_export_matches_the_loaded_records(session: Session, page: int) -> None:
    cat = _catalog(session)
    run1, run2 = cat["runs"]
    cases: list[dict[str, Any]] = [
        {},
        {"brand": cat["brand"]},
        {"brand": cat["other"]},
        {"template": "lifestyle"},
        {"import_run": run1},
        {"import_run": run2, "status": "published"},
        {"status": SUPERSEDED},
        {"status": SUPERSEDED, "brand": cat["brand"], "import_run": run1},
        {"status": ["approved", "rejected"]},
        *({"status": s} for s in REVIEW_STATES),
        {"brand": "no-such-brand"},
    ]
    for filters in cases:
        for base in (None, BASE):
            want = _reference_csv(session, base, **filters)
            got = decisions_csv(session, base, page=page, **filters)
            assert got == want, filters
    everything = _rows(decisions_csv(session, page=page))
    assert len(everything) == len(cat["ids"])  # the planned shot is in no review state
    superseded = _rows(decisions_csv(session, status=SUPERSEDED, page=page))
    assert list(superseded) == [cat["ids"]["superseded"]]
