"""Paths a user gives that can't be used are one line naming the file and exit 2, for every
command: a name the OS refuses (ENAMETOOLONG), a FIFO where a file is expected, and a
decompression-bomb image among calibration examples (issue 13, classes 5 and 8)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from PIL import Image

from catalog import migrate
from tasks.cli import main
from tests.conftest import ROOT

LONG = "a" * 300


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    url = f"sqlite:///{tmp_path / 'paths.db'}"
    migrate.upgrade(url)
    for name in list(os.environ):
        if name.startswith("SHOTLINE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SHOTLINE_DATABASE_URL", url)
    monkeypatch.setenv("SHOTLINE_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("SHOTLINE_BRANDS_DIR", str(ROOT / "samples" / "brands"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _one_line_exit_2(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> str:
    monkeypatch.setattr(sys, "argv", ["shotline", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def _examples(root: Path) -> tuple[Path, Path]:
    pos, neg = root / "pos", root / "neg"
    (pos / "nudity").mkdir(parents=True)
    neg.mkdir()
    Image.new("RGB", (32, 32), "white").save(neg / "ok.png")
    Image.new("RGB", (32, 32), "red").save(pos / "nudity" / "ok.png")
    return pos, neg


@pytest.mark.parametrize(
    "args",
    [
        ["import", f"{LONG}.csv", "--brand", "acme"],
        ["calibrate", "--brand", "acme", "--positives", LONG, "--negatives", LONG],
        ["verify", f"{LONG}.png"],
        ["brands", "check", f"{LONG}.yaml"],
        ["review", "export", "--out", f"{LONG}.csv"],
        ["review", "sheet", "--out", f"{LONG}/sheet.html"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_a_file_name_too_long_is_one_line(
    env: Path,
    args: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    line = _one_line_exit_2(args, monkeypatch, capsys)
    assert LONG[:40] in line


def test_calibrate_refuses_a_decompression_bomb_by_name(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pos, neg = _examples(env)
    bomb = pos / "nudity" / "bomb.png"
    Image.new("1", (20_000, 20_000)).save(bomb)  # a few KB on disk, 400 megapixels
    assert bomb.stat().st_size < 200_000
    line = _one_line_exit_2(
        ["calibrate", "--brand", "acme", "--positives", str(pos), "--negatives", str(neg)],
        monkeypatch,
        capsys,
    )
    assert str(bomb) in line and "pixels" in line


def test_calibrate_refuses_a_fifo_among_the_examples(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pos, neg = _examples(env)
    os.mkfifo(neg / "stuck.png")  # reading it would block forever
    line = _one_line_exit_2(
        ["calibrate", "--brand", "acme", "--positives", str(pos), "--negatives", str(neg)],
        monkeypatch,
        capsys,
    )
    assert "stuck.png" in line and "not a regular file" in line
