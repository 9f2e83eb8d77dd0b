"""Review flags near-duplicates: two shots of one product with the same image embedding are
flagged in ``review list``, ``review show`` and the contact sheet; a different one is not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from catalog import migrate
from catalog.db import make_engine, make_sessionmaker
from catalog.embeddings import store_embedding
from catalog.models import ShotState
from tasks.cli.app import app
from tests.catalog.test_embeddings import towards, unit
from tests.factories import make_brand, make_filter_result, make_product, make_shot


@pytest.fixture
def dup_shots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate.upgrade(url)
    monkeypatch.setenv("SHOTLINE_DATABASE_URL", url)
    monkeypatch.setenv("SHOTLINE_BLOB_ROOT", str(tmp_path / "blobs"))
    monkeypatch.chdir(tmp_path)
    engine = make_engine(url)
    base = unit(7)
    vectors = [base, base, towards(base, unit(8), 0.5)]  # the same image twice, then another
    ids = []
    with make_sessionmaker(engine).begin() as s:
        rev = make_product(s, make_brand(s))
        for template, vec in zip(("hero_white", "lifestyle", "flat_lay"), vectors, strict=True):
            shot = make_shot(s, rev, template=template, state=ShotState.pending_review.value)
            make_filter_result(s, shot)
            store_embedding(s, shot.id, "m", np.asarray(vec))
            ids.append(shot.id)
    engine.dispose()
    return ids


def invoke(*args: str) -> dict | list:  # type: ignore[type-arg]
    res = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout) if "--json" in args else {"text": res.stdout}


def test_review_flags_identical_images_only(dup_shots: list[int]) -> None:
    a, b, c = dup_shots
    records = {r["id"]: r for r in invoke("review", "list", "--json")}  # type: ignore[union-attr]
    assert records[a]["near_duplicate"]["shot_id"] == b
    assert records[a]["near_duplicate"]["note"] == f"near-duplicate of shot {b} (1.00)"
    assert records[b]["near_duplicate"]["shot_id"] == a
    assert records[c]["near_duplicate"] is None
    shown = invoke("review", "show", str(b))["text"]  # type: ignore[call-overload]
    assert f"near-duplicate of shot {a} (1.00)" in shown
    assert "near-duplicate" not in invoke("review", "show", str(c))["text"]  # type: ignore[call-overload]


def test_contact_sheet_says_near_duplicate(dup_shots: list[int], tmp_path: Path) -> None:
    a, b, _ = dup_shots
    invoke("review", "sheet", "--out", str(tmp_path / "sheet"))
    html = (tmp_path / "sheet" / "contact-sheet.html").read_text()
    assert f"near-duplicate of shot {b} (1.00)" in html
    assert f"near-duplicate of shot {a} (1.00)" in html


def test_threshold_is_a_setting(dup_shots: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOTLINE_NEAR_DUPLICATE_THRESHOLD", "0.4")
    records = {r["id"]: r for r in invoke("review", "list", "--json")}  # type: ignore[union-attr]
    assert records[dup_shots[2]]["near_duplicate"]["cosine"] == pytest.approx(0.5, abs=2e-3)
