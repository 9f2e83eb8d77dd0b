"""``shotline brands check`` and ``shotline plan`` through Typer's CliRunner (SQLite)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from catalog import migrate
from catalog.db import make_engine, make_sessionmaker
from catalog.models import Shot
from pipeline.brand.loader import load_brand
from tasks.cli import app
from tests.catalog.test_planning import add_product, tee_data
from tests.conftest import ROOT

ACME = ROOT / "samples" / "brands" / "acme.yaml"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


def test_check_ok() -> None:
    code, out, err = run("brands", "check", str(ACME))
    assert code == 0, err
    assert out.startswith("ok: ") and "brand acme" in out


def test_check_reports_one_line_per_problem_with_field_paths(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        """\
loras:
  - {name: style, path: style.ckpt, sha256: %s}
templates:
  hero:
    prompt: "photo of {{ prodcut.title }}"
  side:
    prompt: "{{ ''.__class__ }}"
"""
        % ("a" * 64),
        encoding="utf-8",
    )
    code, out, err = run("brands", "check", str(bad))
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 4, err
    assert lines[0] == f"error: {bad}: name: Field required"
    assert lines[1].startswith(
        f"error: {bad}:2: loras[0].path: LoRA weights must be a .safetensors"
    )
    assert lines[2].startswith(f"error: {bad}:5: templates.hero.prompt: unknown template variable")
    assert lines[3] == (
        f"error: {bad}:7: templates.side.prompt: attribute access '__class__' is refused by the "
        "sandbox"
    )
    assert "Traceback" not in err


def test_check_verifies_lora_pins(tmp_path: Path) -> None:
    import shutil

    # A real LoRA for the tiny model: a file of other tensors is refused (issue 27).
    shutil.copy(
        ACME.parent.parent / "loras" / "acme_style_tiny.safetensors", tmp_path / "s.safetensors"
    )
    brand = tmp_path / "demo.yaml"
    brand.write_text(
        "name: demo\n"
        "loras:\n"
        f"  - {{name: s, path: s.safetensors, sha256: {'0a' * 32}}}\n"
        "templates:\n"
        "  hero: {prompt: 'photo of {{ product.title }}'}\n",
        encoding="utf-8",
    )
    code, _, err = run("brands", "check", str(brand))
    assert code == 2 and f"{brand}:3: loras[0].sha256: pin mismatch" in err
    code, _, _ = run("brands", "check", "--no-hash", str(brand))
    assert code == 0


def test_no_hash_still_checks_the_safetensors_header(tmp_path: Path) -> None:
    """Issue 13, class 14: ``--no-hash`` skips the sha256, not the header check, so a pickle
    renamed ``.safetensors`` is never "ok"."""
    import pickle

    (tmp_path / "s.safetensors").write_bytes(pickle.dumps({"w": [1.0] * 10}))
    brand = tmp_path / "demo.yaml"
    brand.write_text(
        "name: demo\n"
        "loras:\n"
        f"  - {{name: s, path: s.safetensors, sha256: {'0a' * 32}}}\n"
        "templates:\n"
        "  hero: {prompt: 'photo of {{ product.title }}'}\n",
        encoding="utf-8",
    )
    code, out, err = run("brands", "check", "--no-hash", str(brand))
    assert code == 2, out
    assert f"{brand}:3: loras[0].path:" in err and "not a safetensors file" in err


def test_check_missing_file(tmp_path: Path) -> None:
    code, _, err = run("brands", "check", str(tmp_path / "nope.yaml"))
    assert code == 2 and "nope.yaml: file not found" in err


@pytest.fixture
def cli_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'shotline.db'}"
    migrate.upgrade(url)
    for name in list(os.environ):
        if name.startswith("SHOTLINE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SHOTLINE_DATABASE_URL", url)
    monkeypatch.setenv("SHOTLINE_BRANDS_DIR", str(ACME.parent))
    monkeypatch.chdir(tmp_path)  # no stray .env from the working copy
    yield url


def test_plan_json_then_table_is_idempotent(cli_db: str) -> None:
    engine = make_engine(cli_db)
    try:
        with make_sessionmaker(engine)() as s, s.begin():
            add_product(s, load_brand(ACME), "classic-tee", tee_data())
        code, out, err = run("plan", "--brand", "acme", "--template", "hero_white", "--json")
        assert code == 0, err
        data = json.loads(out)
        assert (data["created"], data["existing"], data["brand"]) == (4, 0, "acme")
        assert len(data["shots"]) == 4 and len(data["planned"]) == 4
        assert {p["variant"]["Color"] for p in data["planned"]} == {"Red", "Blue", "Green", "Black"}
        assert all(p["template"] == "hero_white" and p["seed"] > 0 for p in data["planned"])

        code, out, err = run("plan", "--brand", "acme")
        assert code == 0, err
        assert "acme: 8 new, 4 existing shots for 1 products" in out
        assert "studio product photo of Classic Tee in Red" in out
        with make_sessionmaker(engine)() as s:
            assert s.scalar(select(func.count()).select_from(Shot)) == 12
    finally:
        engine.dispose()


def test_plan_user_errors_exit_2(cli_db: str) -> None:
    code, _, err = run("plan", "--brand", "nope")
    assert code == 2 and "no brand config named 'nope'" in err
    code, _, err = run("plan", "--brand", "acme", "--template", "nope")
    assert code == 2 and "has no template 'nope'" in err
