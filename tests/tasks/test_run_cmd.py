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
    result = runner.invoke(
        app, ["run", "--brand", "acme", "--limit", "4", "--json", "--allow-failures"]
    )
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
    assert failure["kind"] == "generation" and status["failure_kinds"] == {"generation": 1}

    result = runner.invoke(app, ["status"])
    assert result.exit_code == 0 and "pending_review" in result.output
    assert "by kind: generation 1" in result.output


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


def _bad_models(tmp_path: Path) -> dict[str, str]:
    """Weights that can never load, one per way of being wrong."""
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 4096)
    pickles = tmp_path / "pickle-model"
    (pickles / "unet").mkdir(parents=True)
    (pickles / "model_index.json").write_text("{}")
    (pickles / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04junk")
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"\x80\x04junk")
    no_index = tmp_path / "not-a-model"
    no_index.mkdir()
    return {
        "ckpt": str(ckpt),
        "garbage": str(garbage),
        "pickle-folder": str(pickles),
        "missing": str(tmp_path / "missing.safetensors"),
        "no-model-index": str(no_index),
    }


@pytest.mark.parametrize("kind", ["ckpt", "garbage", "pickle-folder", "missing", "no-model-index"])
def test_plan_refuses_a_model_that_can_never_load(
    cli_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Issue 13, class 11: shots pin their model at plan time, so plan checks it."""
    before = seed_shots(cli_settings, 2)
    model = _bad_models(tmp_path)[kind]
    monkeypatch.setenv("SHOTLINE_MODEL", model)
    result = runner.invoke(app, ["plan", "--brand", "acme"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: model "), result.output
    assert model in lines[0]
    monkeypatch.delenv("SHOTLINE_MODEL")
    status = json.loads(runner.invoke(app, ["status", "--json"]).output)
    assert status["total"] == len(before), "nothing was planned"


@pytest.mark.parametrize("kind", ["garbage", "pickle-folder", "missing"])
def test_run_exits_2_when_every_shot_fails_on_bad_weights(
    cli_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Weights that went bad after planning: every shot fails, and run says so with exit 2."""
    seed_shots(cli_settings, 2, model_id=_bad_models(tmp_path)[kind])
    monkeypatch.delenv("SHOTLINE_GENERATOR_FACTORY")  # the real loading code
    result = runner.invoke(app, ["run"])
    assert result.exit_code == 2, result.output
    assert "error: all 2 shot(s) failed; first reason:" in result.output
    assert "Traceback" not in result.output


def test_run_warns_when_the_run_time_model_differs_from_the_planned_one(
    cli_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_shots(cli_settings, 2)  # planned with the tiny model
    monkeypatch.setenv("SHOTLINE_MODEL", "org/other-model")
    result = runner.invoke(app, ["run"])
    assert result.exit_code == 0, result.output
    assert "warning: SHOTLINE_MODEL=org/other-model is ignored by run" in result.output
    assert "pinned tiny" in result.output


def test_run_exits_1_when_a_shot_failed_unless_allowed(cli_settings: Settings) -> None:
    """One rule for people and cron: any failed shot makes the exit non-zero."""
    seed_shots(cli_settings, 2, poison=1)
    result = runner.invoke(app, ["run"])
    assert result.exit_code == 1, result.output  # one failed, one pending review
    assert "failed=1" in result.output and "pending_review=1" in result.output
    # (test_run_then_status: the same mix with --allow-failures exits 0)
    assert "--allow-failures" in runner.invoke(app, ["run", "--help"]).output


def test_embedded_run_says_it_is_loading_models(cli_settings: Settings) -> None:
    """Before the bar moves, a status line names the model being loaded (seen on a terminal)."""
    import os
    import subprocess
    import sys

    seed_shots(cli_settings, 1)
    env = {k: v for k, v in os.environ.items()}
    env.update(FORCE_COLOR="1", COLUMNS="120")
    res = subprocess.run(
        [sys.executable, "-c", "from tasks.cli import main; main()", "run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert res.returncode == 0, res.stderr
    assert "loading model tiny" in res.stderr and "loading the gate" in res.stderr


def test_reproduce_shows_progress(cli_settings: Settings) -> None:
    """reproduce takes tens of seconds on real models: a bar on stderr says which phase."""
    import os
    import subprocess
    import sys

    [shot] = seed_shots(cli_settings, 1)
    assert runner.invoke(app, ["run"]).exit_code == 0
    env = {**os.environ, "FORCE_COLOR": "1", "COLUMNS": "120"}
    res = subprocess.run(
        [sys.executable, "-c", "from tasks.cli import main; main()", "reproduce", str(shot)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert res.returncode == 0, res.stderr
    assert "loading tiny" in res.stderr and "regenerating 1 shot(s)" in res.stderr
    assert "match: true" in res.stdout
