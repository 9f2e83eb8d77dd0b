"""``review list`` builds its records from columns (``iter_records``), not ORM rows: every
record must stay what ``review_record`` says of the loaded shot, key for key and in the same
key order, for every filter, status (``superseded`` included), page size and near-duplicate
flag, on SQLite and Postgres.

The reference is ``list_shots`` + ``near_duplicate_flags`` + ``review_record`` (ORM objects),
the way the listing was built before it read columns.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from sqlalchemy.orm import Session

from catalog.embeddings import store_embedding
from catalog.models import Brand
from catalog.review import (
    REVIEW_STATES,
    SUPERSEDED,
    iter_records,
    list_shots,
    near_duplicate_flags,
    review_record,
)
from tasks.cli.quality.review_cmd import _records as cli_records
from tasks.cli.quality.review_cmd import _stream_json
from tests.catalog.test_review_export import _catalog
from tests.factories import make_product, make_shot

THRESHOLD = 0.97


def _reference(session: Session, threshold: float | None, **filters: Any) -> list[Any]:
    shots = list_shots(session, **filters)
    dups = near_duplicate_flags(session, shots, threshold) if threshold is not None else {}
    return [review_record(shot, dups.get(shot.id)) for shot in shots]


def _records(session: Session, threshold: float | None, page: int, **filters: Any) -> list[Any]:
    pages = list(iter_records(session, page=page, near_duplicate_threshold=threshold, **filters))
    assert all(0 < len(p) <= page for p in pages)
    return [rec for p in pages for rec in p]


def _as_json(records: list[Any]) -> list[str]:
    """What ``--json`` prints of each record: same keys, order and values."""
    return [json.dumps(r, indent=2, default=str) for r in records]


def _with_duplicates(session: Session, brand_name: str) -> tuple[int, int]:
    """Two pending shots of one product with the same image embedding (flagged at any
    threshold), beside the export's catalog."""
    brand = session.query(Brand).filter_by(name=brand_name).one()
    rev = make_product(session, brand)
    a = make_shot(session, rev, state="pending_review", template="hero_white")
    b = make_shot(session, rev, state="pending_review", template="lifestyle")
    v = np.ones(8, dtype=np.float32)
    store_embedding(session, a.id, "m", v)
    store_embedding(session, b.id, "m", v)
    session.flush()
    session.expire_all()
    return a.id, b.id


@pytest.mark.parametrize("page", [1, 2, 500])
def test_records_match_the_loaded_records(session: Session, page: int) -> None:
    cat = _catalog(session)
    dup_a, dup_b = _with_duplicates(session, cat["brand"])
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
        {"status": "pending_review", "after": cat["ids"]["pending"]},
        {"brand": "no-such-brand"},
    ]
    for filters in cases:
        for threshold in (None, THRESHOLD):
            want = _reference(session, threshold, **filters)
            got = _records(session, threshold, page, **filters)
            assert got == want, filters
            assert _as_json(got) == _as_json(want), filters  # key order too
    everything = {r["id"]: r for r in _records(session, THRESHOLD, page)}
    ids = cat["ids"]
    assert set(everything) == {*ids.values(), dup_a, dup_b}
    # the catalog has what the comparison must cover
    assert everything[dup_a]["near_duplicate"]["shot_id"] == dup_b
    assert [e["action"] for e in everything[ids["approved"]]["events"]] == ["reject", "override"]
    assert everything[ids["approved"]]["review_state"] == "approved"
    assert everything[ids["pending"]]["reasons"] == ["=cmd|x", "+1", "@SUM(1)"]
    assert everything[ids["published"]]["image_key"] and everything[ids["published"]]["asset_key"]
    assert everything[ids["bare"]]["gate_decision"] is None
    assert everything[ids["bare"]]["key_scores"] == []


def test_cli_streams_the_reference_json(
    session: Session, capsys: pytest.CaptureFixture[str]
) -> None:
    """``review list --json --all`` prints, page by page, the text ``json.dumps`` writes of
    the whole reference list (what ``print_json`` printed when every row was held)."""
    cat = _catalog(session)
    _with_duplicates(session, cat["brand"])
    more: list[int] = []
    pages = iter_records(session, page=3, near_duplicate_threshold=THRESHOLD)
    _stream_json(cli_records(pages, None, more))
    want = _reference(session, THRESHOLD)
    assert capsys.readouterr().out == json.dumps(want, indent=2, default=str) + "\n"
    assert not more
    _stream_json(cli_records(iter_records(session, brand="no-such-brand"), None, more))
    assert capsys.readouterr().out == "[]\n"
    # a limit stops inside a page and names the last id shown
    _stream_json(cli_records(iter_records(session, page=3), 4, more))
    shown = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in shown] == [r["id"] for r in want[:4]] and more == [want[3]["id"]]
