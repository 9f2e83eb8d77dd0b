"""The line on real `celery worker` processes, real Redis, real Postgres and moto's S3 server,
with the fault cases: a killed worker, a Redis restart, dropped Postgres connections, S3
down while publishing, and a poison shot. The generator and gate are the control-plane
stand-ins from ``tasks.fakes`` so these tests measure orchestration, not models.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import boto3
import psycopg
from moto.server import ThreadedMotoServer
from sqlalchemy import select

from catalog.db import make_engine, make_sessionmaker
from catalog.models import Asset, Shot
from tasks.dispatch import enqueue_publish
from tasks.runner import run_line, wait_for
from tests.conftest import PG_ADMIN_DSN, free_port
from tests.tasks.conftest import (
    approve_all,
    assert_line_sound,
    fleet_settings,
    make_bucket,
    private_redis,
    seed_shots,
)

PUBLISHED_OR_OUT = {"published", "rejected", "failed"}


def _publish_and_wait(settings: Any, ids: list[int], timeout: float = 60) -> None:
    approved = approve_all(settings, ids)
    enqueue_publish(approved, settings)
    _, complete, _ = wait_for(settings, ids, PUBLISHED_OR_OUT, timeout_s=timeout)
    assert complete


def _assets(settings: Any, ids: list[int]) -> list[Asset]:
    engine = make_engine(settings.database_url)
    try:
        with make_sessionmaker(engine).begin() as s:
            return list(s.scalars(select(Asset).where(Asset.shot_id.in_(ids))))
    finally:
        engine.dispose()


def test_fleet_runs_publishes_and_republish_is_noop(
    tmp_path: Path, pg_db: str, fleet_redis: str, moto_server: str, make_fleet: Any
) -> None:
    bucket = make_bucket(moto_server)
    settings, env = fleet_settings(tmp_path, pg_db, fleet_redis, moto_server, bucket)
    ids = seed_shots(settings, 12, reject=2)
    fleet = make_fleet(settings, env)
    fleet.start("w1")

    summary = run_line(settings, brand="acme", progress=False, timeout_s=60)
    assert summary.complete, fleet.log_tail()
    assert summary.mode == "fleet"
    assert summary.counts == {"pending_review": 10, "rejected": 2}

    _publish_and_wait(settings, ids)
    info = assert_line_sound(settings, ids)
    assert info["states"] == {"published": 10, "rejected": 2}
    # Rejected images are watermarked too (an override can publish them), never published.
    assert info["rows"] == {"generations": 12, "filter_results": 12, "watermarks": 12, "assets": 10}

    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    for asset in _assets(settings, ids):
        # {brand}/{sku}/{template}/{sha256}.{ext}, uploaded with its checksum and shot id.
        assert asset.key == f"acme/{asset.key.split('/')[1]}/hero_white/{asset.sha256}.png"
        head = s3.head_object(Bucket=bucket, Key=asset.key, ChecksumMode="ENABLED")
        assert head["ContentType"] == "image/png"
        assert head["Metadata"]["shot-id"] == str(asset.shot_id)
        assert head["ChecksumSHA256"]

    # Re-publishing is a no-op: same rows, same objects.
    before = {(a.shot_id, a.key, a.published_at) for a in _assets(settings, ids)}
    enqueue_publish(ids, settings)
    time.sleep(2)
    assert {(a.shot_id, a.key, a.published_at) for a in _assets(settings, ids)} == before
    assert_line_sound(settings, ids)


def _attempts(settings: Any, ids: list[int]) -> dict[int, int]:
    engine = make_engine(settings.database_url)
    try:
        with make_sessionmaker(engine).begin() as s:
            return dict(s.execute(select(Shot.id, Shot.attempts).where(Shot.id.in_(ids))).all())
    finally:
        engine.dispose()


def _wait_until(predicate: Any, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_kill_9_worker_mid_batch_is_redelivered(
    tmp_path: Path, pg_db: str, fleet_redis: str, moto_server: str, make_fleet: Any
) -> None:
    bucket = make_bucket(moto_server)
    settings, env = fleet_settings(tmp_path, pg_db, fleet_redis, moto_server, bucket)
    ids = seed_shots(settings, 16)
    fleet = make_fleet(settings, env)
    # The victim sleeps in every batch, so a kill lands mid-batch; the survivor is quick.
    fleet.start("victim", queues="gpu.tiny", extra_env={"SHOTLINE_FAKE_GENERATE_DELAY_S": "30"})
    victim_log = fleet.logs / "victim.log"

    from tasks.dispatch import enqueue_generate

    enqueue_generate(ids, settings)
    _wait_until(lambda: "generate_batch" in victim_log.read_text(), what="victim got a batch")
    time.sleep(0.5)
    fleet.kill("victim")  # SIGKILL: no chance to ack, reject or clean up
    fleet.start("survivor", queues="gpu.tiny,cpu")

    _, complete, _ = wait_for(settings, ids, timeout_s=60)
    assert complete, fleet.log_tail()
    info = assert_line_sound(settings, ids, {"pending_review", "rejected", "failed"})
    assert info["states"] == {"pending_review": 16}
    # The killed batch was delivered twice (first to the victim) and counted as an attempt.
    assert max(_attempts(settings, ids).values()) == 2
    assert info["rows"]["generations"] == 16


def test_redis_restart_mid_run(
    tmp_path: Path, pg_db: str, moto_server: str, make_fleet: Any
) -> None:
    bucket = make_bucket(moto_server)
    with private_redis() as (broker, (start_redis, stop_redis)):
        settings, env = fleet_settings(
            tmp_path, pg_db, broker, moto_server, bucket, stall_timeout_s=4.0, batch_size=2
        )
        ids = seed_shots(settings, 24)
        fleet = make_fleet(settings, env)
        fleet.start("w1", extra_env={"SHOTLINE_FAKE_GENERATE_DELAY_S": "0.3"})

        from tasks.dispatch import enqueue_generate

        enqueue_generate(ids, settings)
        _wait_until(lambda: line_done(settings, ids) >= 2, what="some progress before the restart")
        # No persistence: the restart loses every queued and unacked message.
        stop_redis()
        time.sleep(2)
        start_redis()
        _, complete, _ = wait_for(settings, ids, timeout_s=90)
        assert complete, fleet.log_tail()
        info = assert_line_sound(settings, ids, {"pending_review", "rejected", "failed"})
        assert info["states"] == {"pending_review": 24}
        assert info["rows"]["generations"] == 24
        assert fleet.procs["w1"].poll() is None  # the worker reconnected, it did not die


def line_done(settings: Any, ids: list[int]) -> int:
    from tasks.runner import state_counts

    counts = state_counts(settings, ids)
    return counts["pending_review"] + counts["rejected"] + counts["failed"]


def test_postgres_connections_dropped_mid_run(
    tmp_path: Path, pg_db: str, fleet_redis: str, moto_server: str, make_fleet: Any
) -> None:
    bucket = make_bucket(moto_server)
    settings, env = fleet_settings(tmp_path, pg_db, fleet_redis, moto_server, bucket)
    ids = seed_shots(settings, 24)
    fleet = make_fleet(settings, env)
    fleet.start("w1", extra_env={"SHOTLINE_FAKE_GENERATE_DELAY_S": "0.2"})
    dbname = pg_db.rsplit("/", 1)[1]
    stop = threading.Event()
    killed: list[int] = []

    def terminator() -> None:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            while not stop.is_set():
                rows = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (dbname,),
                ).fetchall()
                killed.append(len(rows))
                time.sleep(0.3)

    from tasks.dispatch import enqueue_generate

    enqueue_generate(ids, settings)
    thread = threading.Thread(target=terminator, daemon=True)
    thread.start()
    time.sleep(4)
    stop.set()
    thread.join()
    _, complete, _ = wait_for(settings, ids, timeout_s=90)
    assert complete, fleet.log_tail()
    assert sum(killed) > 0  # connections really were dropped mid-run
    info = assert_line_sound(settings, ids, {"pending_review", "rejected", "failed"})
    assert info["states"] == {"pending_review": 24}, info


def test_s3_down_while_publishing(
    tmp_path: Path, pg_db: str, fleet_redis: str, make_fleet: Any
) -> None:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    try:
        bucket = make_bucket(endpoint)
        settings, env = fleet_settings(tmp_path, pg_db, fleet_redis, endpoint, bucket)
        ids = seed_shots(settings, 12)
        fleet = make_fleet(settings, env)
        fleet.start("w1")
        assert run_line(settings, progress=False, timeout_s=60).complete

        approved = approve_all(settings, ids)
        moto.stop()  # the endpoint refuses connections from here on
        enqueue_publish(approved, settings)
        time.sleep(3)
        assert not _assets(settings, ids)  # nothing recorded while uploads fail
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        moto.start()  # moto keeps its state in-process: the bucket is still there
        _, complete, _ = wait_for(settings, ids, PUBLISHED_OR_OUT, timeout_s=60)
        assert complete, fleet.log_tail()
        info = assert_line_sound(settings, ids)
        assert info["states"] == {"published": 12}
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        for asset in _assets(settings, ids):  # no asset row points to a missing object
            assert s3.head_object(Bucket=bucket, Key=asset.key)["ContentLength"] == asset.size_bytes
        assert "Retry in" in fleet.log_tail(100_000)
    finally:
        moto.stop()


def test_poison_shot_fails_with_reason_others_complete(
    tmp_path: Path, pg_db: str, fleet_redis: str, moto_server: str, make_fleet: Any
) -> None:
    bucket = make_bucket(moto_server)
    settings, env = fleet_settings(tmp_path, pg_db, fleet_redis, moto_server, bucket)
    ids = seed_shots(settings, 10, poison=1)
    fleet = make_fleet(settings, env)
    fleet.start("w1")
    summary = run_line(settings, progress=False, timeout_s=60)
    assert summary.complete, fleet.log_tail()
    info = assert_line_sound(settings, ids, {"pending_review", "rejected", "failed"})
    assert info["states"] == {"pending_review": 9, "failed": 1}
    [(poison_id, reason)] = info["errors"].items()
    assert "impossible size 7x100000" in reason
    assert f"after {settings.max_attempts} attempts" in reason
    assert _attempts(settings, [poison_id])[poison_id] == settings.max_attempts
    assert summary.failures[0]["shot_id"] == poison_id


def test_scheduled_ingest_task_on_a_worker(
    tmp_path: Path, pg_db: str, fleet_redis: str, moto_server: str, make_fleet: Any
) -> None:
    """The beat task on a real worker: a new CSV is imported, planned and run; once only."""
    import os
    import shutil

    from tasks.celery_app import QUEUE_INGEST, TASK_INGEST
    from tasks.dispatch import send
    from tests.conftest import ROOT

    incoming = tmp_path / "incoming"
    incoming.mkdir()
    shutil.copy(ROOT / "samples" / "catalog.csv", incoming / "drop-1.csv")
    old = time.time() - 60
    os.utime(incoming / "drop-1.csv", (old, old))
    bucket = make_bucket(moto_server)
    settings, env = fleet_settings(
        tmp_path,
        pg_db,
        fleet_redis,
        moto_server,
        bucket,
        ingest_sources=[str(incoming)],
        ingest_brand="acme",
    )
    fleet = make_fleet(settings, env)
    fleet.start("w1", queues="gpu.tiny,cpu,ingest")
    send(settings, TASK_INGEST, [], QUEUE_INGEST)

    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)

    def shot_ids() -> list[int]:
        with sessions.begin() as s:
            return sorted(s.scalars(select(Shot.id)))

    _wait_until(lambda: len(shot_ids()) > 0, timeout=60, what="shots planned by ingest")
    ids = shot_ids()
    _, complete, _ = wait_for(settings, ids, timeout_s=60)
    assert complete, fleet.log_tail()
    assert_line_sound(settings, ids, {"pending_review", "rejected", "failed"})
    send(settings, TASK_INGEST, [], QUEUE_INGEST)  # the next tick finds nothing new
    time.sleep(2)
    assert shot_ids() == ids
    assert "'imported': 0" in fleet.log_tail(100_000)
    engine.dispose()
