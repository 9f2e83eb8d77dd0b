"""Two reviewers deciding on one shot at once: exactly one wins, on SQLite and on Postgres.

Real concurrency: two threads, each with its own engine and connection, on a freshly migrated
database (commits are real, so this doesn't use the rolled-back ``session`` fixture).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

import catalog.review as review
from catalog import migrate
from catalog.db import make_engine, make_sessionmaker
from catalog.models import ReviewEvent
from catalog.review import Reviewer, ReviewError, approve
from tests.conftest import create_pg_database, drop_pg_database
from tests.factories import make_brand, make_gated_shot

TRIALS = 8


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'race.db'}"
        migrate.upgrade(url)
        yield url
    else:
        url = create_pg_database("shotline_race")
        yield url
        drop_pg_database(url)


def _race(engines: list[Engine], shot_id: int, barrier: threading.Barrier | None) -> list[Any]:
    results: list[Any] = [None, None]

    def run(i: int) -> None:
        try:
            with make_sessionmaker(engines[i]).begin() as s:
                approve(s, [shot_id], Reviewer(("alice", "bob")[i], "os-login"))
            results[i] = "ok"
        except ReviewError as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_concurrent_approvals_one_wins(fresh_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engines = [make_engine(fresh_url) for _ in range(2)]
    barrier: threading.Barrier | None = None
    if fresh_url.startswith("sqlite"):
        # SQLite has no row locks: line both reviewers up after they read the shot as
        # pending_review and before either writes. That is the interleaving that let both
        # succeed; the state compare-and-set must now refuse the second.
        barrier = threading.Barrier(2, timeout=10)
        authorize = review._authorize

        def lined_up(*args: Any) -> None:
            authorize(*args)
            assert barrier is not None
            barrier.wait()

        monkeypatch.setattr(review, "_authorize", lined_up)
    try:
        for _ in range(TRIALS):
            with make_sessionmaker(engines[0]).begin() as s:
                shot_id = make_gated_shot(s).id
            if barrier is not None:
                barrier.reset()
            results = _race(engines, shot_id, barrier)
            assert sorted(r == "ok" for r in results) == [False, True], results
            loser = next(r for r in results if r != "ok")
            assert isinstance(loser, ReviewError)
            assert f"shot {shot_id}: already approved by '" in str(loser)
            with make_sessionmaker(engines[0]).begin() as s:
                n = s.scalar(select(func.count()).where(ReviewEvent.shot_id == shot_id))
            assert n == 1
    finally:
        for e in engines:
            e.dispose()


def test_a_reviewers_own_postgres_login_is_the_authentication() -> None:
    """The migration's shotline_reviewer role carries what review needs, and no more; a
    member login's events record it as the authenticated reviewer."""
    import uuid

    import psycopg
    from sqlalchemy import make_url
    from sqlalchemy.exc import ProgrammingError

    from tests.conftest import PG_ADMIN_DSN

    url = create_pg_database("shotline_role")
    login = f"shotline_t_rev_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{login}" LOGIN IN ROLE shotline_reviewer')
    admin = make_engine(url)
    as_reviewer = make_engine(make_url(url).set(username=login).render_as_string(False))
    try:
        with make_sessionmaker(admin).begin() as s:
            shot_id = make_gated_shot(s, brand=make_brand(s, config={"reviewers": [login]})).id
        with make_sessionmaker(as_reviewer).begin() as s:
            who = review.resolve_reviewer(s, None, free_names=False)
            assert who == Reviewer(login, login)
            [event] = approve(s, [shot_id], who)
        with make_sessionmaker(admin).begin() as s:
            row = s.get(ReviewEvent, event.id)
            assert row is not None and row.authenticated_reviewer == login
        # ...and nothing beyond review: the role cannot rewrite the catalog.
        with (
            pytest.raises(ProgrammingError, match="permission denied"),
            as_reviewer.begin() as conn,
        ):
            conn.exec_driver_sql("UPDATE brands SET name = 'x'")
    finally:
        as_reviewer.dispose()
        admin.dispose()
        drop_pg_database(url)
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{login}"')
