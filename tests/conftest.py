"""Shared fixtures: real Postgres, real Redis, moto's S3 server, SQLite.

A test that needs a service it cannot reach fails; nothing here skips.
Each pytest process migrates one template database (``alembic upgrade head``) and every
Postgres database a test gets is a fresh copy of it, so parallel runs and helper processes
never trample each other.
"""

from __future__ import annotations

import atexit
import os
import socket
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from catalog import migrate
from catalog.db import make_engine
from pipeline.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_DSN = os.environ.get("SHOTLINE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SHOTLINE_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _pg_url(dbname: str) -> str:
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    return f"{base}/{dbname}"


def _admin(sql: str) -> None:
    try:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql)
    except psycopg.OperationalError as exc:
        pytest.fail(f"Postgres is required at {PG_ADMIN_DSN}: {exc}")


_template: str | None = None
_template_pid = 0  # a forked child must not drop its parent's template at exit


def migrated_template() -> str:
    """This process's migrated database, built once (``alembic upgrade head``) and cloned by
    :func:`create_pg_database`. Nothing connects to it after the migration: Postgres refuses
    ``CREATE DATABASE ... TEMPLATE`` while another session is connected to the template."""
    global _template, _template_pid
    if _template is None:
        name = f"shotline_tpl_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        _admin(f'CREATE DATABASE "{name}"')
        migrate.upgrade(_pg_url(name))  # disposes its engine: no session stays on the template
        # Belt and braces: a stray connection would make every clone fail, so refuse them.
        _admin(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        _template, _template_pid = name, os.getpid()
        atexit.register(drop_migrated_template)
    return _template


def drop_migrated_template() -> None:
    global _template
    if _template is not None and _template_pid == os.getpid():
        drop_pg_database(_pg_url(_template))
        _template = None


def create_pg_database(prefix: str = "shotline_t") -> str:
    """Create a fresh, migrated Postgres database and return its URL.

    A copy of :func:`migrated_template` (a file copy, much cheaper than migrating again).
    """
    template = migrated_template()
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    _admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return _pg_url(name)


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# One thread drops per-test databases while the next test runs (a DROP ... WITH (FORCE) waits
# for the backends it terminates); the interpreter joins it before exiting.
_dropper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-drop")


def drop_pg_database_later(url: str) -> None:
    _dropper.submit(drop_pg_database, url)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    url = create_pg_database()
    yield url
    drop_pg_database(url)


@pytest.fixture(scope="session")
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'shotline.db'}"
    migrate.upgrade(url)
    return url


@pytest.fixture(scope="session")
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    engine = make_engine(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest) -> Engine:
    """Run the test once on SQLite (embedded default) and once on real Postgres."""
    name = "sqlite_engine" if request.param == "sqlite" else "pg_engine"
    return request.getfixturevalue(name)


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session inside a transaction that is rolled back after the test.

    Code under test may call ``commit()``: it only releases a SAVEPOINT.
    """
    conn = engine.connect()
    trans = conn.begin()
    sess = Session(bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False)
    try:
        yield sess
    finally:
        sess.close()
        trans.rollback()
        conn.close()


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"Redis is required at {REDIS_URL}: {exc}")
    return REDIS_URL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's S3 server on a loopback port: real HTTP through boto3."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def tmp_settings(tmp_path: Path) -> Settings:
    """Embedded-default settings rooted in a temp folder (SQLite, local blobs, tiny preset)."""
    var = tmp_path / "var"
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"sqlite:///{var / 'shotline.db'}",
        var_dir=var,
        blob_root=var / "blobs",
        model_cache_dir=ROOT / "var" / "models",
        brands_dir=ROOT / "samples" / "brands",
    )
