"""A fleet that says what is wrong (issue 24): queue depths and consumers from real workers
over Redis, up-front warnings of ``run`` and ``lora train``, ``shotline doctor``, and
ingestion settings set on a real ``celery beat`` (not on the worker)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from catalog.db import make_engine, make_sessionmaker
from catalog.models import ImportRun
from tasks.celery_app import QUEUE_INGEST, TASK_GENERATE
from tasks.cli import app
from tasks.cli.fleet.fleet_info import fleet_info
from tasks.dispatch import send
from tests.conftest import ROOT
from tests.tasks.conftest import fleet_settings, make_bucket, seed_shots

runner = CliRunner()


def _cli_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name in list(os.environ):
        if name.startswith("SHOTLINE_"):
            monkeypatch.delenv(name)
    for key, value in env.items():
        if key.startswith(("SHOTLINE_", "AWS_")):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("COLUMNS", "200")


def test_status_run_lora_and_doctor_see_the_fleet(
    tmp_path: Path,
    pg_db: str,
    fleet_redis: str,
    moto_server: str,
    make_fleet: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bucket = make_bucket(moto_server)
    settings, env = fleet_settings(tmp_path, pg_db, fleet_redis, moto_server, bucket)
    fleet = make_fleet(settings, env)
    fleet.start("c1", queues="cpu,ingest")
    send(settings, TASK_GENERATE, [[999_999]], "gpu.tiny")  # waits: nobody serves gpu.tiny

    info = fleet_info(settings)
    assert info.reachable, info.error
    assert [w.startswith("c1-") for w in info.consumers("cpu")] == [True]
    assert info.consumers("gpu.tiny") == [] and info.depths["gpu.tiny"] == 1

    _cli_env(monkeypatch, env)
    res = runner.invoke(app, ["status"])
    assert res.exit_code == 0, res.output
    row = next(line for line in res.stdout.splitlines() if "gpu.tiny" in line)
    assert "1" in row.split() and "none" in row
    assert "c1-" in next(line for line in res.stdout.splitlines() if "│ cpu " in line)

    seed_shots(settings, 1)
    res = runner.invoke(app, ["run", "--timeout", "1"])
    assert "warning: no worker consumes gpu.tiny" in res.stderr, res.output
    assert "shotline worker --gpu tiny" in res.stderr
    assert res.exit_code == 1  # stopped following before the shot finished

    res = runner.invoke(app, ["doctor"])
    assert res.exit_code == 2, res.output
    assert "problem: queue gpu.tiny: no consumer, 2 message(s) waiting" in res.stderr
    assert "ok database: reachable, at head" in res.stdout
    assert "ok blob store: s3://" in res.stdout and "ok queue cpu: 1 consumer(s)" in res.stdout
    assert "ok brand acme: model tiny resolves" in res.stdout

    sys.path.insert(0, str(ROOT / "samples"))
    from make_lora_train import make

    from pipeline.brand.loader import find_brand
    from pipeline.training.config import TrainConfig
    from tasks.context import context_for
    from tasks.training.runs import new_run

    make(tmp_path / "mugs", count=10)
    brand = find_brand(settings.brands_dir, "acme")
    run_id, _ = new_run(
        context_for(settings), brand, str(tmp_path / "mugs"), "m", "mugstyle", TrainConfig(steps=2)
    )
    res = runner.invoke(app, ["lora", "train", "--brand", "acme", "--resume", str(run_id)])
    assert res.exit_code == 0, res.output
    assert "warning: no worker consumes train.tiny" in res.stderr
    assert f"training run {run_id} queued on train.tiny" in res.stdout


def test_doctor_names_a_missing_bucket_and_an_unmigrated_database(
    tmp_path: Path, fleet_redis: str, moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cli_env(
        monkeypatch,
        {
            "SHOTLINE_VAR_DIR": str(tmp_path),
            "SHOTLINE_BLOB_BACKEND": "s3",
            "SHOTLINE_S3_ENDPOINT_URL": moto_server,
            "SHOTLINE_S3_BUCKET": "absent-bucket-x",
            "SHOTLINE_BROKER_URL": fleet_redis,
            "SHOTLINE_BRANDS_DIR": str(ROOT / "samples" / "brands"),
        },
    )
    res = runner.invoke(app, ["doctor"])
    assert res.exit_code == 2
    problems = [line for line in res.stderr.splitlines() if line.startswith("problem:")]
    assert any("database" in p and "shotline db upgrade" in p for p in problems), res.stderr
    assert any("blob store" in p and "'absent-bucket-x' does not exist" in p for p in problems)
    assert any("queue cpu: no consumer" in p for p in problems)


def test_ingest_settings_set_on_beat_take_effect(
    tmp_path: Path, pg_db: str, fleet_redis: str, moto_server: str, make_fleet: Any
) -> None:
    """As documented: SHOTLINE_INGEST_* on the beat process only; the worker has none."""
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    shutil.copy(ROOT / "samples" / "catalog.csv", incoming / "drop-1.csv")
    old = time.time() - 60
    os.utime(incoming / "drop-1.csv", (old, old))
    bucket = make_bucket(moto_server)
    settings, env = fleet_settings(tmp_path, pg_db, fleet_redis, moto_server, bucket)
    fleet = make_fleet(settings, env)
    fleet.start("i1", queues=QUEUE_INGEST)
    beat_env = {
        **env,
        "SHOTLINE_INGEST_SOURCES": str(incoming),  # plain text, as people write it
        "SHOTLINE_INGEST_BRAND": "acme",
        "SHOTLINE_INGEST_INTERVAL_S": "1",
    }
    log = (tmp_path / "beat.log").open("wb")
    beat = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "celery"),
            "-A",
            "tasks.celery_app",
            "beat",
            "-s",
            str(tmp_path / "beat-schedule"),
            "--pidfile",
            str(tmp_path / "beat.pid"),
        ],
        cwd=ROOT,
        env=beat_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    engine = make_engine(settings.database_url)
    try:
        deadline = time.monotonic() + 90
        runs: list[ImportRun] = []
        while time.monotonic() < deadline and not runs:
            with make_sessionmaker(engine).begin() as s:
                runs = list(s.scalars(select(ImportRun)))
                for r in runs:
                    s.expunge(r)
            time.sleep(0.5)
        assert runs, fleet.log_tail() + (tmp_path / "beat.log").read_text()
        assert runs[0].source_uri == str(incoming / "drop-1.csv")
        assert runs[0].status != "failed", runs[0].error
    finally:
        os.killpg(beat.pid, 9)
        beat.wait(timeout=30)
        engine.dispose()
