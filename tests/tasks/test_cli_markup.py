"""User text in every command's output is printed as text (issue 13, class 1): a file name, a
brand, a revision or an --out path holding Rich markup, emoji codes or control characters is
shown literally, never parsed (no MarkupError, no swallowed or restyled text)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from catalog import migrate
from tasks.cli import main
from tests.conftest import ROOT

HOSTILE = "[bold red]x[/b]:smile:"
# As a path, HOSTILE is the file "b]:smile:" in the folder "[bold red]x[" (made in each test).
FILE_NAME = "[bold red]x[b]:smile:"  # one path component: markup without a slash


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    url = f"sqlite:///{tmp_path / 'markup.db'}"
    migrate.upgrade(url)
    for name in list(os.environ):
        if name.startswith("SHOTLINE_"):
            monkeypatch.delenv(name)
    (tmp_path / HOSTILE).parent.mkdir()
    brands = tmp_path / "brands"
    brands.mkdir()
    for name in (FILE_NAME, "acme"):
        shutil.copy(ROOT / "samples" / "brands" / "acme.yaml", brands / f"{name}.yaml")
    monkeypatch.setenv("SHOTLINE_DATABASE_URL", url)
    monkeypatch.setenv("SHOTLINE_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("SHOTLINE_BRANDS_DIR", str(brands))
    monkeypatch.setenv("COLUMNS", "400")  # no wrapping inside the checked text
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["shotline", *args])
    code: int | str | None = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    assert "MarkupError" not in out + err and "Traceback" not in out + err
    return int(code or 0), out + err


@pytest.mark.parametrize(
    "args",
    [
        ["brands", "list"],
        ["status", "--brand", HOSTILE],
        ["run", "--brand", HOSTILE],
        ["review", "export", "--out", f"{HOSTILE}.csv"],
        ["review", "sheet", "--out", f"{HOSTILE}-sheet"],
        ["import", f"{HOSTILE}.csv", "--brand", "acme"],
        ["lineage", f"sku:{HOSTILE}"],
        ["db", "upgrade", HOSTILE],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_hostile_text_is_shown_literally(
    env: Path, args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = _run(args, monkeypatch, capsys)
    assert code in (0, 2), output
    shown = " ".join(output.split())  # table titles and cells may wrap at spaces
    expected = FILE_NAME if args == ["brands", "list"] else HOSTILE
    assert expected in shown, output
