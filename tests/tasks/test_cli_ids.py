"""Every id and count a command takes is bounded: a number no row can have (>= 2**63, 0,
negative, not a number) is one line and exit 2, before any query runs (issue 13, class 8)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from catalog import migrate
from tasks.cli import main

TOO_BIG = str(2**63)

CASES = [
    ("lineage", f"shot:{TOO_BIG}"),
    ("lineage", f"asset:{TOO_BIG}"),
    ("lineage", "shot:0"),
    ("lineage", f"shot:{2**31}"),  # a Postgres INTEGER id can't be this large
    ("review", "show", str(2**31)),
    ("lineage", "--import-run", TOO_BIG),
    ("reproduce", TOO_BIG),
    ("review", "show", TOO_BIG),
    ("review", "show", "-5"),
    ("review", "show", "abc"),
    ("review", "approve", TOO_BIG, "--reviewer", "demo"),
    ("review", "approve", "1", TOO_BIG),
    ("review", "reject", TOO_BIG, "--reason", "x"),
    ("review", "list", "--import-run", TOO_BIG),
    ("review", "list", "--limit", "9" * 30),
    ("review", "sheet", "--import-run", TOO_BIG, "--out", "x.html"),
    ("review", "export", "--import-run", TOO_BIG, "--out", "x.csv"),
    ("run", "--limit", "9" * 30),
    ("plan", "--brand", "acme", "--show", "-1"),
    ("review", "nosuchcommand"),
]


@pytest.fixture
def sqlite_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    url = f"sqlite:///{tmp_path / 'ids.db'}"
    migrate.upgrade(url)
    monkeypatch.setenv("SHOTLINE_DATABASE_URL", url)
    monkeypatch.setenv("SHOTLINE_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("SHOTLINE_REVIEW_FREE_NAMES", "true")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("args", CASES, ids=lambda a: " ".join(a)[:60])
def test_out_of_range_ids_are_one_line_exit_2(
    sqlite_env: Path,
    args: tuple[str, ...],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(sys, "argv", ["shotline", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err and "OverflowError" not in err
    assert not any(ch in err for ch in "│╭╰"), "a usage error is a line, not a panel"
