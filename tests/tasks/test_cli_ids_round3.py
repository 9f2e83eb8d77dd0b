"""Issue 31, class 5 and the small ones: huge ids on the newest commands are one line and
exit 2 (no OverflowError); ``lora train --name`` is checked before any training."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from catalog import migrate
from tasks.cli import main

TOO_BIG = str(2**63)
HUGE = "9" * 40

CASES = [
    ("lineage", "--like", TOO_BIG),
    ("lineage", "--like", f"asset:{HUGE}"),
    ("lineage", "--like", "²"),  # str.isdigit() says yes, int() says no
    ("lora", "status", TOO_BIG),
    ("lora", "show", HUGE),
    ("lora", "status", "0"),
    ("lora", "train", "--brand", "acme", "--resume", TOO_BIG),
    (
        "lora",
        "train",
        "--brand",
        "acme",
        "--steps",
        HUGE,
        "--images",
        "x",
        "--name",
        "n",
        "--trigger",
        "t",
    ),
    (
        "lora",
        "train",
        "--brand",
        "acme",
        "--seed",
        HUGE,
        "--images",
        "x",
        "--name",
        "n",
        "--trigger",
        "t",
    ),
    ("sources", "list", "--brand", "acme", "--limit", HUGE),
    ("sources", "list", "--brand", "acme", "--limit", "-1"),
]


@pytest.fixture
def sqlite_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    url = f"sqlite:///{tmp_path / 'ids.db'}"
    migrate.upgrade(url)
    monkeypatch.setenv("SHOTLINE_DATABASE_URL", url)
    monkeypatch.setenv("SHOTLINE_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("SHOTLINE_BRANDS_DIR", str(Path(__file__).parents[2] / "samples/brands"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _one_line_exit_2(
    args: tuple[str, ...], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> str:
    monkeypatch.setattr(sys, "argv", ["shotline", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and "OverflowError" not in err
    return lines[0]


@pytest.mark.parametrize("args", CASES, ids=lambda a: " ".join(a)[:60])
def test_huge_ids_on_new_commands(
    sqlite_env: Path,
    args: tuple[str, ...],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _one_line_exit_2(args, monkeypatch, capsys)


def test_lora_name_checked_before_training(
    sqlite_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The images folder does not even exist: the name is refused first, before the dataset
    # is read (before: the folder was read and the run trained, then the name failed).
    line = _one_line_exit_2(
        (
            "lora",
            "train",
            "--brand",
            "acme",
            "--images",
            str(sqlite_env / "none"),
            "--name",
            "bad name!",
            "--trigger",
            "t",
        ),
        monkeypatch,
        capsys,
    )
    assert "--name" in line and "bad name!" in line
