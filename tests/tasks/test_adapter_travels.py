"""A LoRA trained on one fleet host is used by a shot on another: the trained adapter goes
to the blob store under its content key, the brand names it ``store://``, and the GPU host
(its own local folders) fetches it, checks the pin and loads it. Two real worker processes,
moto's S3."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import boto3
from sqlalchemy import select

from catalog.db import make_engine, make_sessionmaker
from catalog.models import Brand, Generation, Shot
from catalog.training import get_training
from pipeline.brand.loader import find_brand
from pipeline.digests import sha256_file
from pipeline.training.config import TrainConfig
from tasks.context import context_for
from tasks.runner import run_line
from tasks.training.runs import new_run
from tasks.training.task import enqueue_training
from tests.conftest import ROOT
from tests.factories import make_product, make_shot
from tests.tasks.conftest import fleet_settings, make_bucket

sys.path.insert(0, str(ROOT / "samples"))
from make_lora_train import make


def _wait_trained(ctx: Any, run_id: int, timeout: float = 240) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with ctx.sessions() as s:
            row = get_training(s, run_id)
            if row.state in ("done", "failed"):
                return row.state, row.adapter_sha256, row.adapter_uri
        time.sleep(0.2)
    raise AssertionError(f"training run {run_id} did not finish")


def _seed(settings: Any, adapters: list[list[dict[str, Any]]]) -> list[int]:
    engine = make_engine(settings.database_url)
    try:
        with make_sessionmaker(engine).begin() as s:
            row = s.scalar(select(Brand).where(Brand.name == "acme"))  # training upserted it
            assert row is not None
            return [
                make_shot(s, make_product(s, row, f"SKU-{i}", line=i + 2), seed=7, adapters=a).id
                for i, a in enumerate(adapters)
            ]
    finally:
        engine.dispose()


def test_adapter_trained_on_one_host_is_used_on_another(
    tmp_path: Path, pg_db: str, fleet_redis: str, moto_server: str, make_fleet: Any
) -> None:
    bucket = make_bucket(moto_server)
    host_a, host_b = tmp_path / "a", tmp_path / "b"
    common = {"device": "cpu", "generator_factory": "", "max_attempts": 3}
    settings_a, env_a = fleet_settings(
        host_a,
        pg_db,
        fleet_redis,
        moto_server,
        bucket,
        model_cache_dir=str(host_a / "models"),
        **common,
    )
    settings_b, env_b = fleet_settings(
        host_b,
        pg_db,
        fleet_redis,
        moto_server,
        bucket,
        model_cache_dir=str(host_b / "models"),
        **common,
    )
    images = tmp_path / "mugs"
    make(images, count=10)
    brand = find_brand(ROOT / "samples" / "brands", "acme")
    cfg = TrainConfig(rank=4, alpha=4, steps=4, lr=1e-3, resolution=64, batch_size=2)
    ctx = context_for(settings_a)
    run_id, _ = new_run(ctx, brand, str(images), "acme_mug", "acmestyle", cfg)

    fleet_a = make_fleet(settings_a, env_a)
    fleet_a.start("trainer", queues="train.tiny")
    assert enqueue_training(settings_a, run_id, brand.base_model) == "train.tiny"
    state, sha, uri = _wait_trained(ctx, run_id)
    assert state == "done", fleet_a.log_tail()
    assert uri == f"store://loras/{sha}.safetensors"
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    assert s3.head_object(Bucket=bucket, Key=f"loras/{sha}.safetensors")["ContentLength"] > 0

    # A forged object under a content key: its bytes are not the pinned ones.
    forged = "ab" * 32
    s3.put_object(Bucket=bucket, Key=f"loras/{forged}.safetensors", Body=b"not the adapter")
    style = {"name": "acme_mug", "sha256": sha, "weight": 1.0, "uri": uri, "trigger_word": None}
    bad = {**style, "sha256": forged, "uri": f"store://loras/{forged}.safetensors"}
    ids = _seed(settings_b, [[style], [], [bad]])

    fleet_b = make_fleet(settings_b, env_b)
    fleet_b.start("gpu-b")
    summary = run_line(settings_b, brand="acme", progress=False, timeout_s=240)
    assert summary.complete, fleet_b.log_tail()

    engine = make_engine(settings_b.database_url)
    try:
        with make_sessionmaker(engine).begin() as s:
            shots = {x.id: x for x in s.scalars(select(Shot).where(Shot.id.in_(ids)))}
            images_sha = {g.shot_id: g.sha256 for g in s.scalars(select(Generation))}
    finally:
        engine.dispose()
    with_lora, plain, forged_shot = (shots[i] for i in ids)
    assert with_lora.state == plain.state == "pending_review", fleet_b.log_tail()
    # The same seed and prompt: the adapter changed the image.
    assert images_sha[with_lora.id] != images_sha[plain.id]
    # Host B fetched the adapter into its own cache; it never saw host A's folders.
    fetched = host_b / "models" / "loras" / f"{sha}.safetensors"
    assert sha256_file(fetched) == sha
    assert not (host_a / "models" / "loras").exists()
    # The forged one failed its pin at the first attempt, naming the URI.
    assert (forged_shot.state, forged_shot.attempts, forged_shot.error_kind) == (
        "failed",
        1,
        "lora_incompatible",
    )
    assert f"sha256 mismatch for store://loras/{forged}.safetensors" in forged_shot.error
