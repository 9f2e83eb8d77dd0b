"""`shotline run`, `shotline status` and `shotline worker` on the embedded default."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from catalog import migrate
from pipeline.settings import Settings
from tasks.cli import app
from tasks.context import reset_contexts
from tests.conftest import ROOT
from tests.tasks.conftest import seed_shots

runner = CliRunner()


@pytest.fixture
def cli_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    env = {
        "SHOTLINE_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "SHOTLINE_BLOB_ROOT": str(tmp_path / "blobs"),
        "SHOTLINE_BRANDS_DIR": str(ROOT / "samples" / "brands"),
        "SHOTLINE_GENERATOR_FACTORY": "tasks.fakes:fixed_image_generator",
        "SHOTLINE_GATE_FACTORY": "tasks.fakes:pass_through_gate",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SHOTLINE_BROKER_URL", raising=False)
    settings = Settings()
    migrate.upgrade(settings.database_url)
    yield settings
    reset_contexts()


def test_run_then_status(cli_settings: Settings) -> None:
    ids = seed_shots(cli_settings, 6, poison=1, reject=1)
    result = runner.invoke(app, ["run", "--brand", "acme", "--limit", "4", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["mode"] == "in-process" and summary["total"] == 4
    assert summary["counts"] == {"rejected": 1, "failed": 1, "pending_review": 2}
    assert "impossible size" in summary["failures"][0]["error"]

    result = runner.invoke(app, ["run"])  # the two shots left, with a progress bar
    assert result.exit_code == 0, result.output
    assert "2 shot(s)" in result.output

    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["total"] == len(ids)
    assert status["counts"]["pending_review"] == 4 and status["counts"]["failed"] == 1
    assert status["throughput"]["generated"] == 5 and status["throughput"]["gated"] == 5
    [failure] = status["failures"]
    assert failure["attempts"] == 3 and "impossible size 7x100000" in failure["error"]

    result = runner.invoke(app, ["status"])
    assert result.exit_code == 0 and "pending_review" in result.output


def test_run_unknown_brand_is_one_line_exit_2(cli_settings: Settings) -> None:
    result = runner.invoke(app, ["run", "--brand", "nope"])
    assert result.exit_code == 2
    assert "unknown brand 'nope'" in result.output
    assert "Traceback" not in result.output


def test_worker_command(cli_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    result = runner.invoke(app, ["worker", "--gpu", "tiny"])
    assert result.exit_code == 2 and "no broker configured" in result.output
    monkeypatch.setenv("SHOTLINE_BROKER_URL", "redis://127.0.0.1:6379/11")
    result = runner.invoke(app, ["worker", "--gpu", "tiny", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "-Q gpu.tiny --pool solo" in result.output
    result = runner.invoke(app, ["worker", "--cpu", "-c", "2", "--dry-run"])
    assert "-Q cpu,ingest --pool prefork -c 2" in result.output
    # LoRA training: its own queue per base model; generation and training only when asked
    result = runner.invoke(app, ["worker", "--train", "tiny", "--dry-run"])
    assert "-Q train.tiny --pool solo" in result.output
    result = runner.invoke(app, ["worker", "--gpu", "tiny", "--train", "tiny", "--dry-run"])
    assert "-Q gpu.tiny,train.tiny --pool solo" in result.output
    result = runner.invoke(app, ["worker", "--cpu", "--train", "tiny", "--dry-run"])
    assert result.exit_code == 2
