"""Beat's feed refresh (``shotline.refresh_feeds``) on a real ``celery worker``, real Redis,
Postgres and moto's S3 server: the channels that name a ``feed`` are written to the bucket
after publishing, a tick with nothing new writes nothing, and a recall rewrites them."""

from __future__ import annotations

import csv
import io
import json
import re
import time
from pathlib import Path
from typing import Any

import boto3
import pandas as pd
from sqlalchemy import select

from catalog.db import make_engine, make_sessionmaker
from catalog.delivery.recall import recall
from catalog.models import Asset
from pipeline.settings import Settings
from tasks.celery_app import app, celery_config, submit
from tasks.delivery.feeds import refresh_feeds_task
from tasks.dispatch import enqueue_publish
from tasks.queues import QUEUE_CPU, TASK_FEEDS
from tasks.runner import run_line, wait_for
from tests.conftest import ROOT
from tests.tasks.conftest import approve_all, fleet_settings, make_bucket, seed_shots

BASE = "https://cdn.example.com/acme/"


def test_beat_schedules_the_feed_refresh_when_configured() -> None:
    on = celery_config(Settings(_env_file=None, feed_interval_s=120))  # type: ignore[call-arg]
    entry = on["beat_schedule"]["refresh-store-feeds"]
    assert entry["task"] == TASK_FEEDS and entry["schedule"] == 120.0
    assert entry["options"]["queue"] == QUEUE_CPU
    off = celery_config(Settings(_env_file=None, feed_interval_s=0))  # type: ignore[call-arg]
    assert "refresh-store-feeds" not in off["beat_schedule"]
    assert "ingest-due-catalogs" in off["beat_schedule"]
    assert app.conf.task_routes[TASK_FEEDS] == {"queue": QUEUE_CPU}
    assert TASK_FEEDS in app.tasks


def _brands_with_feeds(tmp_path: Path) -> Path:
    """The sample brand with ``feed: csv`` on shopify and ``feed: tsv`` on gmc."""
    text = (ROOT / "samples" / "brands" / "acme.yaml").read_text()
    text = text.replace("../loras/", f"{ROOT / 'samples' / 'loras'}/")
    for channel, fmt in (("shopify", "csv"), ("gmc", "tsv")):
        head = f"\n  {channel}:\n"
        assert head in text
        text = text.replace(head, f"{head}    feed: {fmt}\n", 1)
    out = tmp_path / "brands"
    out.mkdir()
    (out / "acme.yaml").write_text(text)
    return out


def _objects(s3: Any, bucket: str) -> dict[str, Any]:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="feeds/").get("Contents", [])
    return {o["Key"]: o["ETag"] for o in listed}


def test_worker_rewrites_feeds_after_publishing_and_recall(
    tmp_path: Path, pg_db: str, fleet_redis: str, moto_server: str, make_fleet: Any
) -> None:
    bucket = make_bucket(moto_server)
    settings, env = fleet_settings(
        tmp_path,
        pg_db,
        fleet_redis,
        moto_server,
        bucket,
        brands_dir=str(_brands_with_feeds(tmp_path)),
        public_base_url=BASE,
    )
    fleet = make_fleet(settings, env)
    fleet.start("line", queues="gpu.tiny,cpu")
    ids = seed_shots(settings, 3)
    run_line(settings, progress=False)
    approve_all(settings, ids)
    enqueue_publish(ids, settings)
    _, complete, _ = wait_for(settings, ids, {"published"}, timeout_s=60, poll_s=0.2)
    assert complete, fleet.log_tail()
    fleet.kill("line")  # from here on, only the feeds worker consumes cpu messages
    fleet.start("feeds", queues="cpu")  # its log holds only the refresh tasks
    log = tmp_path / "logs" / "feeds.log"
    done = re.compile(rf"Task {re.escape(TASK_FEEDS)}\[[0-9a-f-]+\] succeeded")

    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")

    def tick(n: int) -> None:
        submit(settings, refresh_feeds_task, [], QUEUE_CPU)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if len(done.findall(log.read_text(errors="replace"))) >= n:
                return
            time.sleep(0.2)
        raise AssertionError(f"refresh {n} did not finish:\n{log.read_text()[-3000:]}")

    tick(1)
    first = _objects(s3, bucket)
    assert set(first) == {
        "feeds/acme/shopify.csv",
        "feeds/acme/shopify.csv.state.json",
        "feeds/acme/gmc.tsv",
        "feeds/acme/gmc.tsv.state.json",
    }, log.read_text()[-3000:]
    body = s3.get_object(Bucket=bucket, Key="feeds/acme/shopify.csv")["Body"].read().decode()
    shop = pd.read_csv(io.StringIO(body), dtype=str, keep_default_na=False)
    images = shop[shop["Image Src"] != ""]
    assert len(images) == 3 and all(u.startswith(BASE) for u in images["Image Src"])
    gmc_body = s3.get_object(Bucket=bucket, Key="feeds/acme/gmc.tsv")["Body"].read().decode()
    gmc = list(csv.DictReader(io.StringIO(gmc_body), delimiter="\t"))
    assert len(gmc) == 3
    state = json.loads(
        s3.get_object(Bucket=bucket, Key="feeds/acme/gmc.tsv.state.json")["Body"].read()
    )
    assert state["fingerprint"].startswith("a") and state["images"] == 3

    # Nothing new: the next tick writes nothing (same objects, same ETags).
    tick(2)
    assert _objects(s3, bucket) == first

    # A recall changes what the feeds list: the next tick rewrites both without it.
    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine).begin() as s:
        asset_id = s.scalars(select(Asset.id).order_by(Asset.id)).first()
        assert asset_id is not None
        recall(s, [asset_id], "wrong colour", {"assets": [asset_id]})
    engine.dispose()
    tick(3)
    after = _objects(s3, bucket)
    assert after["feeds/acme/shopify.csv"] != first["feeds/acme/shopify.csv"]
    body = s3.get_object(Bucket=bucket, Key="feeds/acme/shopify.csv")["Body"].read().decode()
    shop = pd.read_csv(io.StringIO(body), dtype=str, keep_default_na=False)
    assert len(shop[shop["Image Src"] != ""]) == 2
