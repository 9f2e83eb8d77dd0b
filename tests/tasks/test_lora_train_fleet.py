"""A real training worker killed with SIGKILL mid-run: the redelivered job resumes from the
latest checkpoint and ends with the same adapter sha256 as an uninterrupted run."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch

from catalog.training import get_training
from pipeline.brand.loader import find_brand
from pipeline.training.config import TrainConfig
from tasks.context import context_for
from tasks.training.job import run_job
from tasks.training.runs import new_run
from tasks.training.task import enqueue_training
from tests.conftest import ROOT
from tests.tasks.conftest import fleet_settings, make_bucket

sys.path.insert(0, str(ROOT / "samples"))
from make_lora_train import make

STEPS, EVERY = 300, 10
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _row(ctx: Any, run_id: int) -> dict[str, Any]:
    with ctx.sessions() as s:
        row = get_training(s, run_id)
        return {"state": row.state, "step": row.steps_done, "sha": row.adapter_sha256}


def _wait(ctx: Any, run_id: int, ok: Any, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = _row(ctx, run_id)
        if ok(row):
            return row
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} never got there: {_row(ctx, run_id)}")


def test_kill_9_training_worker_resumes_to_same_sha(
    tmp_path: Path, pg_db: str, fleet_redis: str, moto_server: str, make_fleet: Any
) -> None:
    torch.set_num_threads(1)  # the same arithmetic as the single-threaded workers
    bucket = make_bucket(moto_server)
    settings, env = fleet_settings(tmp_path, pg_db, fleet_redis, moto_server, bucket, device="cpu")
    images = tmp_path / "mugs"
    make(images, count=10)
    brand = find_brand(ROOT / "samples" / "brands", "acme")
    cfg = TrainConfig(
        rank=4, alpha=4, steps=STEPS, lr=1e-3, resolution=64, batch_size=2, checkpoint_every=EVERY
    )
    ctx = context_for(settings)
    ref_id, _ = new_run(ctx, brand, str(images), "acme_mug", "acmestyle", cfg)
    victim_id, _ = new_run(ctx, brand, str(images), "acme_mug", "acmestyle", cfg)

    fleet = make_fleet(settings, env)
    fleet.start("t1", queues="train.tiny", extra_env=ONE_THREAD)
    assert enqueue_training(settings, victim_id, brand.base_model) == "train.tiny"
    _wait(ctx, victim_id, lambda r: r["step"] >= 2 * EVERY, timeout=120)
    fleet.kill("t1")
    at_kill = _row(ctx, victim_id)
    assert at_kill["state"] == "running" and at_kill["step"] < STEPS

    fleet.start("t2", queues="train.tiny", extra_env=ONE_THREAD)
    done = _wait(ctx, victim_id, lambda r: r["state"] in ("done", "failed"), timeout=240)
    assert done["state"] == "done", fleet.log_tail()
    log = (fleet.logs / "t2.log").read_text()
    resumed = int(log.split(f"training run {victim_id}: resuming from step ")[1].split()[0])
    assert resumed >= at_kill["step"] - EVERY  # at most one checkpoint interval lost

    result = run_job(ctx, ref_id)  # the same run, uninterrupted, in this process
    assert result["state"] == "done"
    assert done["sha"] == result["sha256"]
