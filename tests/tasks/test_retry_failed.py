"""``shotline run --retry-failed``: failed shots whose cause is gone run again, counting
attempts afresh, and the error each had stays in its history; ``status`` counts the
retryable ones by kind."""

from __future__ import annotations

import json

from sqlalchemy import select, update
from typer.testing import CliRunner

from catalog import migrate
from catalog.db import make_engine, make_sessionmaker
from catalog.delivery.retry import error_history, retryable_counts
from catalog.models import Shot
from pipeline.settings import Settings
from tasks.cli import app
from tests.tasks.conftest import cli_env, seed_shots

FAKES = {
    "SHOTLINE_GENERATOR_FACTORY": "tasks.fakes:fixed_image_generator",
    "SHOTLINE_GATE_FACTORY": "tasks.fakes:pass_through_gate",
}


def _cli(settings: Settings, *args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, list(args), env={**cli_env(settings), **FAKES})
    return res.exit_code, res.output


def _shots(settings: Settings, ids: list[int]) -> dict[int, Shot]:
    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine).begin() as s:
        shots = {sh.id: sh for sh in s.scalars(select(Shot).where(Shot.id.in_(ids)))}
        s.expunge_all()
    engine.dispose()
    return shots


def test_retry_failed_requeues_and_keeps_history(tmp_settings: Settings) -> None:
    migrate.upgrade(tmp_settings.database_url)
    ids = seed_shots(tmp_settings, 3, poison=1)  # shot 0: an impossible size
    code, out = _cli(tmp_settings, "run", "--brand", "acme", "--json")
    assert code == 1, out
    failed = [sid for sid, sh in _shots(tmp_settings, ids).items() if sh.state == "failed"]
    assert failed == [ids[0]]
    first = _shots(tmp_settings, failed)[ids[0]]
    assert first.error and first.error_kind

    engine = make_engine(tmp_settings.database_url)
    with make_sessionmaker(engine).begin() as s:
        assert retryable_counts(s, "acme") == {first.error_kind: 1}
        # The cause goes away (a fixed template), as an operator would fix it.
        s.execute(update(Shot).where(Shot.id == ids[0]).values(width=64, height=64))
    engine.dispose()
    code, out = _cli(tmp_settings, "status", "--brand", "acme")
    assert code == 0 and "retryable (run --retry-failed)" in out, out

    # A kind that matches nothing re-queues nothing; a bad kind is one line, exit 2.
    code, out = _cli(tmp_settings, "run", "--retry-failed", "--kind", "oomm")
    assert code == 2 and "--kind 'oomm'" in out
    code, out = _cli(tmp_settings, "run", "--retry-failed", "--kind", first.error_kind)
    assert code == 0, out
    assert f"re-queued 1 failed shot(s): {first.error_kind} 1" in out
    after = _shots(tmp_settings, ids)[ids[0]]
    assert after.state == "pending_review" and after.error is None
    assert after.attempts == 1  # counted afresh: the history keeps the spent attempts

    engine = make_engine(tmp_settings.database_url)
    with make_sessionmaker(engine).begin() as s:
        history = error_history(s, ids[0])
        assert retryable_counts(s, "acme") == {}
    engine.dispose()
    assert len(history) == 1
    assert history[0]["error"] == first.error and history[0]["kind"] == first.error_kind
    assert history[0]["attempts"] == first.attempts and history[0]["retried_by"]
    code, out = _cli(tmp_settings, "status", "--json")
    assert json.loads(out)["retryable_failures"] == {}
