"""The line on real `celery worker` processes, real Redis, real Postgres and moto's S3 server,
with the fault cases: a killed worker, a Redis restart, dropped Postgres connections, S3
down while publishing, and a poison shot. The generator and gate are the control-plane
stand-ins from ``tasks.fakes`` so these tests measure orchestration, not models.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from moto.server import ThreadedMotoServer
from sqlalchemy import select

from catalog.db import make_engine, make_sessionmaker
from catalog.models import Asset, Shot
from tasks.dispatch import chunks, enqueue_publish
from tasks.runner import run_line, wait_for
from tests.conftest import free_port
from tests.tasks.conftest import (
    Fleet,
    approve_all,
    assert_line_sound,
    fleet_settings,
    line_counts,
    make_bucket,
    private_redis,
    seed_shots,
)

PUBLISHED_OR_OUT = {"published", "rejected", "failed"}


def _publish_and_wait(settings: Any, ids: list[int], timeout: float = 60) -> None:
    approved = approve_all(settings, ids)
    enqueue_publish(approved, settings)
    _, complete, _ = wait_for(settings, ids, PUBLISHED_OR_OUT, timeout_s=timeout, poll_s=0.2)
    assert complete


def _wait_until(
    predicate: Any, timeout: float = 30, what: str = "condition", detail: Any = None
) -> None:
    """Poll ``predicate`` every 0.1 s; fail naming ``what`` (and ``detail()``) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    extra = f"\n{detail()}" if detail else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")


def _task_events(fleet: Fleet, task: str, event: str) -> Counter[str]:
    """Per task id, how often the workers logged ``Task shotline.<task>[<id>] <event>``."""
    pattern = re.compile(rf"Task shotline\.{task}\[([0-9a-f-]+)\] {event}")
    return Counter(pattern.findall(fleet.log_tail(10**9)))


def _wait_tasks_done(fleet: Fleet, task: str, before: Counter[str], n: int) -> None:
    """Wait until ``n`` more ``task`` messages succeeded than in ``before``."""

    def finished() -> int:
        return (_task_events(fleet, task, "succeeded") - before).total()

    _wait_until(
        lambda: finished() >= n,
        what=f"{n} more {task} task(s) to succeed",
        detail=lambda: f"{finished()} did\n{fleet.log_tail()}",
    )


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
    published = _task_events(fleet, "publish_shot", "succeeded")
    enqueue_publish(ids, settings)
    # The worker has handled every republish message before we look.
    _wait_tasks_done(
        fleet, "publish_shot", published, len(list(chunks(ids, settings.cpu_batch_size)))
    )
    assert {(a.shot_id, a.key, a.published_at) for a in _assets(settings, ids)} == before
    assert_line_sound(settings, ids)


def _attempts(settings: Any, ids: list[int]) -> dict[int, int]:
    engine = make_engine(settings.database_url)
    try:
        with make_sessionmaker(engine).begin() as s:
            return dict(s.execute(select(Shot.id, Shot.attempts).where(Shot.id.in_(ids))).all())
    finally:
        engine.dispose()


@pytest.mark.slow
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
    # Its claim is committed (state generating, one attempt counted): it is now mid-batch.
    _wait_until(
        lambda: line_counts(settings, ids)["states"].get("generating", 0) > 0,
        what="the victim to claim a batch",
        detail=lambda: victim_log.read_text(errors="replace")[-3000:],
    )
    fleet.kill("victim")  # SIGKILL: no chance to ack, reject or clean up
    fleet.start("survivor", queues="gpu.tiny,cpu")

    _, complete, _ = wait_for(settings, ids, timeout_s=60, poll_s=0.2)
    assert complete, fleet.log_tail()
    info = assert_line_sound(settings, ids, {"pending_review", "rejected", "failed"})
    assert info["states"] == {"pending_review": 16}
    # The killed batch was delivered twice (first to the victim) and counted as an attempt.
    assert max(_attempts(settings, ids).values()) == 2
    assert info["rows"]["generations"] == 16


@pytest.mark.slow
def test_kill_9_gpu_worker_while_finalizing_loses_and_duplicates_nothing(
    tmp_path: Path, pg_db: str, fleet_redis: str, moto_server: str, make_fleet: Any
) -> None:
    """The gate on the GPU host: kill -9 while a batch is finalizing (after its images were
    generated and scored, before its one transaction). Nothing of it is written; the message
    is redelivered and every shot ends with exactly one generation, decision and watermark."""
    bucket = make_bucket(moto_server)
    settings, env = fleet_settings(
        tmp_path, pg_db, fleet_redis, moto_server, bucket, batch_size=2, gpu_batches_per_task=3
    )
    assert settings.gate_on == "gpu"
    ids = seed_shots(settings, 6)  # one message: three GPU batches of two
    marker = tmp_path / "finalizing"
    fleet = make_fleet(settings, env)
    slow = {"SHOTLINE_FAKE_FINALIZE_DELAY_S": "30", "SHOTLINE_FAKE_FINALIZE_MARKER": str(marker)}
    fleet.start("victim", queues="gpu.tiny", extra_env=slow)

    from tasks.dispatch import enqueue_generate

    enqueue_generate(ids, settings)
    _wait_until(
        marker.exists, what="the victim to start finalizing", detail=lambda: fleet.log_tail()
    )
    fleet.kill("victim")  # SIGKILL mid-finalize: no ack, no commit
    killed = line_counts(settings, ids)
    assert killed["states"] == {"generating": 6}, killed
    assert killed["rows"]["generations"] == 0 and killed["rows"]["filter_results"] == 0

    fleet.start("survivor", queues="gpu.tiny,cpu")
    _, complete, _ = wait_for(settings, ids, timeout_s=60, poll_s=0.2)
    assert complete, fleet.log_tail()
    info = assert_line_sound(settings, ids, {"pending_review"})
    assert info["states"] == {"pending_review": 6}
    rows = info["rows"]
    assert rows["generations"] == rows["filter_results"] == rows["watermarks"] == 6, rows
    assert max(_attempts(settings, ids).values()) == 2  # the killed delivery counted once


@pytest.mark.slow
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
        time.sleep(2)  # the outage itself (the fault under test), not a wait for something
        start_redis()
        _, complete, _ = wait_for(settings, ids, timeout_s=90, poll_s=0.2)
        assert complete, fleet.log_tail()
        info = assert_line_sound(settings, ids, {"pending_review", "rejected", "failed"})
        assert info["states"] == {"pending_review": 24}
        assert info["rows"]["generations"] == 24
        assert fleet.procs["w1"].poll() is None  # the worker reconnected, it did not die


def line_done(settings: Any, ids: list[int]) -> int:
    from tasks.runner import state_counts

    counts = state_counts(settings, ids)
    return counts["pending_review"] + counts["rejected"] + counts["failed"]


@pytest.mark.slow
def test_postgres_connections_dropped_mid_run(
    tmp_path: Path, pg_db: str, fleet_redis: str, moto_server: str, make_fleet: Any
) -> None:
    bucket = make_bucket(moto_server)
    settings, env = fleet_settings(tmp_path, pg_db, fleet_redis, moto_server, bucket)
    ids = seed_shots(settings, 24)
    fleet = make_fleet(settings, env)
    fleet.start("w1", extra_env={"SHOTLINE_FAKE_GENERATE_DELAY_S": "0.2"})
    dbname = pg_db.rsplit("/", 1)[1]
    killed: list[int] = []

    def terminator() -> None:
        """Drop every connection to the line's database each 0.3 s until the line is done
        (its own connection, into that database, is spared), for at most 4 s."""
        until = time.monotonic() + 4
        with psycopg.connect(pg_db, autocommit=True) as conn:
            while time.monotonic() < until:
                rows = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (dbname,),
                ).fetchall()
                killed.append(len(rows))
                row = conn.execute(
                    "SELECT count(*) FROM shots WHERE id = ANY(%s) AND state = 'pending_review'",
                    (ids,),
                ).fetchone()
                if row is not None and row[0] == len(ids):
                    return
                time.sleep(0.3)

    from tasks.dispatch import enqueue_generate

    enqueue_generate(ids, settings)
    thread = threading.Thread(target=terminator, daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the connection terminator did not stop"
    _, complete, _ = wait_for(settings, ids, timeout_s=90, poll_s=0.2)
    assert complete, fleet.log_tail()
    assert sum(killed) > 0  # connections really were dropped mid-run
    info = assert_line_sound(settings, ids, {"pending_review", "rejected", "failed"})
    assert info["states"] == {"pending_review": 24}, info


@pytest.mark.slow
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
        retried = _task_events(fleet, "publish_shot", "retry: Retry in")
        enqueue_publish(approved, settings)
        # Every publish message has failed its upload and is being retried.
        messages = len(list(chunks(approved, settings.cpu_batch_size)))

        def retrying() -> int:  # messages with a retry logged since the outage began
            return len(_task_events(fleet, "publish_shot", "retry: Retry in") - retried)

        _wait_until(
            lambda: retrying() >= messages,
            what=f"all {messages} publish task(s) to fail and retry",
            detail=fleet.log_tail,
        )
        assert not _assets(settings, ids)  # nothing recorded while uploads fail
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        moto.start()  # moto keeps its state in-process: the bucket is still there
        _, complete, _ = wait_for(settings, ids, PUBLISHED_OR_OUT, timeout_s=60, poll_s=0.2)
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
    ingested = _task_events(fleet, "ingest_due_catalogs", "succeeded")
    send(settings, TASK_INGEST, [], QUEUE_INGEST)

    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)

    def shot_ids() -> list[int]:
        with sessions.begin() as s:
            return sorted(s.scalars(select(Shot.id)))

    _wait_until(lambda: len(shot_ids()) > 0, timeout=60, what="shots planned by ingest")
    ids = shot_ids()
    _, complete, _ = wait_for(settings, ids, timeout_s=60, poll_s=0.2)
    assert complete, fleet.log_tail()
    assert_line_sound(settings, ids, {"pending_review", "rejected", "failed"})
    send(settings, TASK_INGEST, [], QUEUE_INGEST)  # the next tick finds nothing new
    _wait_tasks_done(fleet, "ingest_due_catalogs", ingested, 2)
    assert shot_ids() == ids
    assert "'imported': 0" in fleet.log_tail(100_000)
    engine.dispose()
