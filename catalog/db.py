"""Engine and session factory. One engine per process, built from settings.

The application layer (``tasks/``) names no SQLAlchemy module (the import contract in
pyproject.toml): the types and errors it handles are the ones re-exported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

__all__ = [
    "MAX_ROW_ID",
    "DBAPIError",
    "Engine",
    "OperationalError",
    "SQLAlchemyError",
    "Session",
    "is_sqlite",
    "make_engine",
    "make_sessionmaker",
    "normalize_url",
    "sessionmaker",
]

# Row ids are INTEGER primary keys: 32-bit on Postgres (64-bit on SQLite). A larger number
# can name no row, and the drivers raise on it (OverflowError, "integer out of range"), so
# every id from a user is checked against this.
MAX_ROW_ID = 2**31 - 1


def normalize_url(url: str) -> str:
    """Postgres URLs use psycopg 3 whatever driver the user wrote."""
    for prefix in ("postgresql://", "postgres://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, **kwargs: Any) -> Engine:
    url = normalize_url(url)
    if is_sqlite(url):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets the CLI read while an in-process run writes; FKs are off by default.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    # pre_ping survives pg_terminate_backend and Postgres restarts between tasks.
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)
