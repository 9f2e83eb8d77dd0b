"""``shotline import`` through Typer's CliRunner (SQLite; the importer itself is tested on
both databases in tests/catalog/test_import.py)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from catalog import migrate
from catalog.db import make_engine, make_sessionmaker
from catalog.models import ImportRun, Product
from tasks.cli import app
from tests.conftest import ROOT

SAMPLES = ROOT / "samples"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def cli_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    migrate.upgrade(url)
    for name in list(os.environ):
        if name.startswith("SHOTLINE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SHOTLINE_DATABASE_URL", url)
    monkeypatch.setenv("SHOTLINE_BRANDS_DIR", str(SAMPLES / "brands"))
    monkeypatch.chdir(tmp_path)  # no stray .env from the working copy
    yield url


def test_import_prints_summary_then_json_on_reimport(cli_db: str) -> None:
    code, out, err = run("import", str(SAMPLES / "catalog.csv"), "--brand", "acme")
    assert code == 0, err
    assert "products imported" in out and "new revisions" in out and "shopify" in out

    code, out, err = run("import", str(SAMPLES / "catalog.csv"), "--brand", "acme", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["status"] == "succeeded"
    assert (summary["imported"], summary["revisions_new"], summary["unchanged"]) == (5, 0, 5)

    with make_sessionmaker(make_engine(cli_db))() as s:
        assert len(s.scalars(select(Product)).all()) == 5


def test_import_gmc_with_explicit_format(cli_db: str) -> None:
    code, out, err = run(
        "import", str(SAMPLES / "catalog_gmc.tsv"), "-b", "acme", "--format", "gmc", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["format"] == "gmc"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.csv", "--brand", "acme"], "missing.csv: file not found"),
        (["{catalog}", "--brand", "nobody"], "no brand config named 'nobody'"),
        (["{catalog}", "--brand", "acme", "--format", "xml"], "unknown format 'xml'"),
        (["{empty}", "--brand", "acme"], "empty file"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(
    cli_db: str, tmp_path: Path, args: list[str], message: str
) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    subs = {"{catalog}": str(SAMPLES / "catalog.csv"), "{empty}": str(empty)}
    code, out, err = run("import", *[subs.get(a, a) for a in args])
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert "Traceback" not in err + out


def test_failed_import_json_reports_the_recorded_run(cli_db: str, tmp_path: Path) -> None:
    bad = tmp_path / "nokey.csv"
    bad.write_text("sku,name\n1,Tee\n", encoding="utf-8")
    code, out, err = run("import", str(bad), "--brand", "acme", "--json")
    assert code == 2 and "no key column" in err
    summary = json.loads(out)
    assert summary["status"] == "failed" and "no key column" in summary["error"]
    with make_sessionmaker(make_engine(cli_db))() as s:
        run_row = s.get(ImportRun, summary["run_id"])
        assert run_row is not None and run_row.status == "failed"
        assert s.scalars(select(Product)).all() == []


def test_an_import_whose_every_row_failed_exits_2(cli_db: str, tmp_path: Path) -> None:
    """Issue 13, class 6: 0 products and only row errors used to exit 0 like a success."""
    path = tmp_path / "allbad.csv"
    path.write_text(
        "Handle,Title,Variant SKU,Variant Price\np1,Tee,S1\np2,Mug,S2\n", encoding="utf-8"
    )
    code, out, err = run("import", str(path), "--brand", "acme")
    assert code == 2, out + err
    assert "every data row failed (2 row errors" in err
    assert "Traceback" not in out + err


@pytest.mark.parametrize("encoding", ["rot13", "base64", "zlib_codec", "utf-16", "nope"])
def test_bad_encoding_names_are_one_line_exit_2(cli_db: str, tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "c.csv"
    path.write_text("Handle,Title\np1,Tee\n", encoding="utf-8")
    code, out, err = run("import", str(path), "--brand", "acme", "--encoding", encoding)
    assert code == 2, out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "--encoding" in lines[0], err
