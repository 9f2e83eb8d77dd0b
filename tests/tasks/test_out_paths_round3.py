"""Issue 31, class 7: ``--out`` targets are written beside and renamed; a symlink, FIFO or
other non-regular target (or a symlinked sheet folder) is refused, one line, exit 2."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from catalog import migrate
from pipeline.outputs import OutputPathError, write_output_bytes
from tasks.cli import app


def test_write_output_refuses_links_and_fifos(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    link = tmp_path / "out.csv"
    link.symlink_to(victim)
    with pytest.raises(OutputPathError, match="is a symlink"):
        write_output_bytes(link, b"x")
    assert victim.read_text() == "keep me"
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    with pytest.raises(OutputPathError, match="is a FIFO"):
        write_output_bytes(fifo, b"x")
    plain = tmp_path / "plain.csv"
    plain.write_text("old")
    write_output_bytes(plain, b"new")
    assert plain.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("SHOTLINE_"):
            monkeypatch.delenv(name)
    url = f"sqlite:///{tmp_path / 'o.db'}"
    migrate.upgrade(url)
    monkeypatch.setenv("SHOTLINE_DATABASE_URL", url)
    monkeypatch.setenv("SHOTLINE_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run_with_deadline(*args: str) -> tuple[int, str]:
    """The command in a thread: a write that blocks on a FIFO fails the test, not hangs it."""
    box: dict[str, object] = {}

    def go() -> None:
        res = CliRunner().invoke(app, list(args), env={"COLUMNS": "300"})
        box["res"] = res

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    thread.join(20)
    if "res" not in box:
        # Unblock the writer so the thread ends, then fail.
        for arg in args:
            if Path(arg).is_fifo():
                fd = os.open(arg, os.O_RDONLY | os.O_NONBLOCK)
                os.close(fd)
        pytest.fail(f"{args} blocked")
    res = box["res"]
    return res.exit_code, res.stderr  # type: ignore[attr-defined]


def test_review_export_refuses_symlink_and_fifo(env: Path) -> None:
    victim = env / "victim.txt"
    victim.write_text("keep me")
    (env / "link.csv").symlink_to(victim)
    code, err = _run_with_deadline("review", "export", "--out", str(env / "link.csv"))
    assert code == 2 and "is a symlink" in err, err
    assert victim.read_text() == "keep me"
    os.mkfifo(env / "pipe.csv")
    code, err = _run_with_deadline("review", "export", "--out", str(env / "pipe.csv"))
    assert code == 2 and "is a FIFO" in err, err
    code, err = _run_with_deadline("review", "export", "--out", str(env / "ok.csv"))
    assert code == 0, err
    assert (env / "ok.csv").read_text(encoding="utf-8-sig").startswith("shot_id") or (
        env / "ok.csv"
    ).stat().st_size > 0


def test_review_sheet_refuses_symlinked_folder(env: Path) -> None:
    elsewhere = env / "elsewhere"
    elsewhere.mkdir()
    (env / "sheet").symlink_to(elsewhere, target_is_directory=True)
    code, err = _run_with_deadline("review", "sheet", "--out", str(env / "sheet"))
    assert code == 2 and "is a symlink" in err, err
    assert list(elsewhere.iterdir()) == []
