"""``shotline lineage --like ASSET``: the nearest published assets, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import Result
from typer.testing import CliRunner

from catalog import migrate
from catalog.db import make_engine, make_sessionmaker
from catalog.embeddings import store_embedding
from catalog.models import ShotState
from tasks.cli.app import app
from tests.catalog.test_embeddings import towards, unit
from tests.factories import make_asset, make_brand, make_product, make_shot


@pytest.fixture
def like_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate.upgrade(url)
    monkeypatch.setenv("SHOTLINE_DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)
    engine = make_engine(url)
    base, side = unit(5), unit(6)
    ids: dict[str, int] = {}
    with make_sessionmaker(engine).begin() as s:
        brand = make_brand(s)
        for name, cos in (("origin", 1.0), ("near", 0.9), ("far", 0.2), ("bare", None)):
            shot = make_shot(s, make_product(s, brand), state=ShotState.published.value)
            if cos is not None:
                vec = base if cos == 1.0 else towards(base, side, cos)
                store_embedding(s, shot.id, "m", np.asarray(vec))
            ids[name] = make_asset(s, shot).id
    engine.dispose()
    return ids


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, ["lineage", *args], env={"COLUMNS": "200"})


def test_like_lists_nearest_first(like_db: dict[str, int]) -> None:
    res = invoke("--like", f"asset:{like_db['origin']}", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert [n["asset_id"] for n in data["neighbours"]] == [like_db["near"], like_db["far"]]
    assert data["neighbours"][0]["cosine"] == pytest.approx(0.9, abs=2e-3)
    res = invoke("--like", str(like_db["origin"]), "--top", "1")
    assert res.exit_code == 0 and "0.9" in res.stdout
    assert "1 published asset(s) nearest" in res.stdout


@pytest.mark.parametrize(
    ("ref", "message"), [("asset:999999", "no such asset"), ("nope/key.png", "no published asset")]
)
def test_like_unknown_asset_is_one_line(like_db: dict[str, int], ref: str, message: str) -> None:
    res = invoke("--like", ref)
    assert res.exit_code == 2 and message in res.output
    assert "Traceback" not in res.output


def test_like_asset_without_embedding_is_one_line(like_db: dict[str, int]) -> None:
    res = invoke("--like", f"asset:{like_db['bare']}")
    assert res.exit_code == 2 and "no stored embedding" in res.output
