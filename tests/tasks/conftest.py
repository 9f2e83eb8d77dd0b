"""Harness for the production-line tests: seeded shots, real `celery worker` subprocesses.

Fleet tests run real workers against a per-test Postgres database, a dedicated Redis db
number (or a private redis-server where the test restarts it) and moto's S3 server.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
from sqlalchemy import func, select

from catalog.db import make_engine, make_sessionmaker
from catalog.models import Asset, FilterResult, Generation, Shot, ShotState, Watermark
from pipeline.brand.loader import find_brand
from pipeline.settings import Settings
from tasks.context import reset_contexts
from tests.conftest import ROOT, create_pg_database, drop_pg_database_later, free_port
from tests.factories import make_brand, make_product, make_shot

# Fleet tests get a Redis db of their own, flushed before each test. Two test runs on one
# redis-server (two worktrees, a run beside CI) must not consume each other's messages, so
# each run leases a free db from these (a key in db 0 that expires if the run is killed);
# SHOTLINE_TEST_FLEET_REDIS_DB pins one instead. 7, 9 and 13 are left to other tests and
# the benchmarks.
FLEET_REDIS_DBS = (11, 12, 14, 15, 10, 8, 6, 5, 4, 3, 2, 1)
FLEET_LEASE_S = 3 * 3600
TERMINAL = {ShotState.rejected, ShotState.published, ShotState.failed}


def seed_shots(
    settings: Settings,
    n: int,
    *,
    poison: int = 0,
    reject: int = 0,
    brand: str = "acme",
    model_id: str | None = None,
) -> list[int]:
    """Commit ``n`` planned shots of the sample brand; ``poison`` of them have an impossible
    size, ``reject`` of them a product text the stand-in gate rejects."""
    engine = make_engine(settings.database_url)
    cfg = find_brand(settings.brands_dir, brand)
    ids: list[int] = []
    try:
        with make_sessionmaker(engine).begin() as s:
            row = make_brand(s, name=brand, config=cfg.to_json(), config_digest=cfg.digest())
            for i in range(n):
                title = "Reject Lamp" if i < reject else f"Linen Cushion {i}"
                rev = make_product(s, row, f"SKU-{i:05d}", title=title, line=i + 2)
                extra: dict[str, Any] = {}
                if reject <= i < reject + poison:
                    extra = {"width": 7, "height": 100_000}
                if model_id is not None:
                    extra["model_id"] = model_id
                ids.append(make_shot(s, rev, **extra).id)
    finally:
        engine.dispose()
    return ids


def cli_env(settings: Settings) -> dict[str, str]:
    """The environment a `shotline` CLI call needs to see ``settings``' embedded line (its
    database, blob folder, model cache and the sample packshots as a source root)."""
    return {
        "SHOTLINE_DATABASE_URL": settings.database_url,
        "SHOTLINE_VAR_DIR": str(settings.var_dir),
        "SHOTLINE_BLOB_ROOT": str(settings.blob_root),
        "SHOTLINE_MODEL_CACHE_DIR": str(settings.model_cache_dir),
        "SHOTLINE_SOURCE_ROOTS": json.dumps([str(ROOT / "samples")]),
    }


def line_counts(settings: Settings, ids: list[int]) -> dict[str, Any]:
    engine = make_engine(settings.database_url)
    try:
        with make_sessionmaker(engine).begin() as s:
            states = dict(
                s.execute(
                    select(Shot.state, func.count()).where(Shot.id.in_(ids)).group_by(Shot.state)
                ).all()
            )
            dupes = {}
            for model in (Generation, FilterResult, Watermark, Asset):
                dupes[model.__tablename__] = s.scalar(
                    select(func.count()).select_from(
                        select(model.shot_id)
                        .group_by(model.shot_id)
                        .having(func.count() > 1)
                        .subquery()
                    )
                )
            rows = {
                m.__tablename__: s.scalar(select(func.count()).select_from(m))
                for m in (Generation, FilterResult, Watermark, Asset)
            }
            errors = dict(
                s.execute(
                    select(Shot.id, Shot.error).where(Shot.id.in_(ids), Shot.state == "failed")
                ).all()
            )
    finally:
        engine.dispose()
    return {"states": states, "dupes": dupes, "rows": rows, "errors": errors}


def assert_line_sound(settings: Settings, ids: list[int], terminal: set[str] | None = None) -> dict:
    """Every shot terminal, at most one generation/filter/watermark/asset row per shot."""
    info = line_counts(settings, ids)
    done = terminal or TERMINAL
    stuck = {s: n for s, n in info["states"].items() if s not in done}
    assert not stuck, f"shots not terminal: {stuck} ({info})"
    assert sum(info["states"].values()) == len(ids)
    assert all(v == 0 for v in info["dupes"].values()), info["dupes"]
    return info


def approve_all(settings: Settings, ids: list[int], reviewer: str = "demo") -> list[int]:
    from catalog.review import Reviewer, approve

    engine = make_engine(settings.database_url)
    try:
        with make_sessionmaker(engine).begin() as s:
            pending = list(
                s.scalars(select(Shot.id).where(Shot.id.in_(ids), Shot.state == "pending_review"))
            )
            if pending:
                approve(s, pending, Reviewer(reviewer, "fleet-test"))
    finally:
        engine.dispose()
    return pending


@dataclass
class Fleet:
    """Real worker subprocesses sharing one Settings (passed as SHOTLINE_* env)."""

    settings: Settings
    env: dict[str, str]
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(
        self,
        name: str,
        queues: str = "gpu.tiny,cpu",
        pool: str = "solo",
        extra_env: dict[str, str] | None = None,
        wait: bool = True,
    ) -> subprocess.Popen[bytes]:
        log = self.logs / f"{name}.log"
        args = [
            str(ROOT / ".venv" / "bin" / "celery"),
            "-A",
            "tasks.celery_app",
            "worker",
            "-Q",
            queues,
            "--pool",
            pool,
            "-n",
            f"{name}-{uuid.uuid4().hex[:6]}@%h",
            "-l",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        if pool == "prefork":
            args += ["-c", "1"]
        proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env={**self.env, **(extra_env or {})},
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        if wait:
            self.wait_ready(name)
        return proc

    def wait_ready(self, name: str, timeout: float = 60) -> None:
        log = self.logs / f"{name}.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in log.read_text(errors="replace"):
                return
            if self.procs[name].poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"worker {name} not ready:\n{log.read_text(errors='replace')[-3000:]}")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        proc.wait(timeout=30)

    def stop_all(self) -> None:
        """End every worker (teardown). The test and its assertions are over, so there is
        nothing to drain: SIGKILL to each process group (prefork children included) instead
        of a Celery warm or cold shutdown, which takes 1-3 s per worker."""
        for name, proc in self.procs.items():
            if proc.poll() is None:
                self.kill(name)

    def log_tail(self, n: int = 4000) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-n:]}" for p in self.logs.glob("*.log")
        )


def make_bucket(endpoint: str, name: str | None = None) -> str:
    name = name or f"shotline-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


def fleet_settings(
    tmp_path: Path, pg_url: str, broker_url: str, s3_endpoint: str, bucket: str, **over: Any
) -> tuple[Settings, dict[str, str]]:
    values: dict[str, Any] = {
        "database_url": pg_url,
        "broker_url": broker_url,
        "var_dir": str(tmp_path / "var"),
        "brands_dir": str(ROOT / "samples" / "brands"),
        "model_cache_dir": str(ROOT / "var" / "models"),
        "blob_backend": "s3",
        "s3_endpoint_url": s3_endpoint,
        "s3_bucket": bucket,
        "generator_factory": "tasks.fakes:fixed_image_generator",
        "gate_factory": "tasks.fakes:pass_through_gate",
        "visibility_timeout_s": 4,
        "task_retry_backoff_max_s": 2,
        "task_max_retries": 20,
        "stall_timeout_s": 8.0,
        "batch_size": 4,
        "cpu_batch_size": 8,
    }
    values.update(over)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOTLINE_")}
    env.update(
        {
            f"SHOTLINE_{k.upper()}": json.dumps(v) if isinstance(v, list) else str(v)
            for k, v in values.items()
        }
    )
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
    return settings, env


@pytest.fixture
def pg_db() -> Iterator[str]:
    url = create_pg_database("shotline_line")
    yield url
    reset_contexts()
    drop_pg_database_later(url)


@pytest.fixture(scope="session")
def fleet_redis_db(redis_url: str) -> Iterator[int]:
    """This run's fleet db: pinned by SHOTLINE_TEST_FLEET_REDIS_DB, else leased."""
    pinned = os.environ.get("SHOTLINE_TEST_FLEET_REDIS_DB")
    if pinned:
        yield int(pinned)
        return
    leases = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/0")
    owner = f"{socket.gethostname()}:{os.getpid()}"
    for db in FLEET_REDIS_DBS:
        key = f"shotline-test:fleet-db:{db}"
        if leases.set(key, owner, nx=True, ex=FLEET_LEASE_S):
            break
    else:
        pytest.fail(f"no free Redis db for the fleet tests among {FLEET_REDIS_DBS}")
    try:
        yield db
    finally:
        if leases.get(key) == owner.encode():
            leases.delete(key)


@pytest.fixture
def fleet_redis(redis_url: str, fleet_redis_db: int) -> Iterator[str]:
    url = redis_url.rsplit("/", 1)[0] + f"/{fleet_redis_db}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()


@pytest.fixture
def make_fleet(tmp_path: Path) -> Iterator[Any]:
    fleets: list[Fleet] = []

    def factory(settings: Settings, env: dict[str, str]) -> Fleet:
        logs = tmp_path / "logs"
        logs.mkdir(exist_ok=True)
        fleet = Fleet(settings, env, logs)
        fleets.append(fleet)
        return fleet

    yield factory
    for fleet in fleets:
        fleet.stop_all()


@contextlib.contextmanager
def private_redis(port: int | None = None) -> Iterator[tuple[str, Any]]:
    """A redis-server of our own on a loopback port: a test may stop and restart it."""
    port = port or free_port()
    state: dict[str, subprocess.Popen[bytes]] = {}

    def start() -> None:
        state["p"] = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=port)
        for _ in range(100):
            with contextlib.suppress(redis.exceptions.ConnectionError):
                if client.ping():
                    return
            time.sleep(0.05)
        raise AssertionError("private redis-server did not start")

    def stop() -> None:
        state["p"].kill()
        state["p"].wait()

    start()
    try:
        yield f"redis://127.0.0.1:{port}/0", (start, stop)
    finally:
        if state["p"].poll() is None:
            stop()


__all__ = [
    "Fleet",
    "approve_all",
    "assert_line_sound",
    "fleet_settings",
    "line_counts",
    "make_bucket",
    "private_redis",
    "seed_shots",
    "sys",
]
