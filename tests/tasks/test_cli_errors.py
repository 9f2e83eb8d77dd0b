"""Database errors reach the user as one line and exit code 2, whatever the command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def _shotline(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    code = "from tasks.cli import main; main()"
    full = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "args",
    [("status",), ("review", "list"), ("plan", "--brand", "acme"), ("lineage", "shot:1")],
)
def test_unmigrated_database_is_one_line_exit_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    res = _shotline({"SHOTLINE_VAR_DIR": str(tmp_path)}, *args)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "run `shotline db upgrade`" in lines[0], res.stderr


def test_unreachable_database_is_one_line_exit_2(tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    res = _shotline({"SHOTLINE_VAR_DIR": str(tmp_path), "SHOTLINE_DATABASE_URL": url}, "status")
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot use the database"), res.stderr
