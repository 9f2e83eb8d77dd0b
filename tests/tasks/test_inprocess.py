"""The embedded default: no broker, SQLite, local blobs, in-process, with the real tiny
generator and the real gate (CLIP + watermark). Tiny-preset images are random noise."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from catalog import migrate
from catalog.db import make_engine, make_sessionmaker
from catalog.models import Asset, Generation, Watermark
from pipeline.settings import Settings
from pipeline.storage import LocalBlobStore, sha256_bytes
from tasks.dispatch import enqueue_publish
from tasks.runner import run_line
from tests.conftest import ROOT
from tests.tasks.conftest import approve_all, assert_line_sound, seed_shots


def test_in_process_line_with_real_tiny_models(tmp_settings: Settings) -> None:
    assert tmp_settings.embedded
    migrate.upgrade(tmp_settings.database_url)
    ids = seed_shots(tmp_settings, 3)

    summary = run_line(tmp_settings, brand="acme", progress=False)
    assert summary.mode == "in-process"
    assert summary.complete and summary.total == 3
    assert sum(summary.counts.values()) == 3
    assert set(summary.counts) <= {"pending_review", "rejected"}

    approve_all(tmp_settings, ids)
    enqueue_publish(ids, tmp_settings)
    info = assert_line_sound(tmp_settings, ids)
    assert info["rows"]["generations"] == 3

    store = LocalBlobStore(Path(tmp_settings.blob_root))
    engine = make_engine(tmp_settings.database_url)
    with make_sessionmaker(engine).begin() as s:
        gens = list(s.scalars(select(Generation)))
        assert all(g.device for g in gens) and all(g.model_digest for g in gens)
        marks = {w.shot_id: w for w in s.scalars(select(Watermark))}
        assets = list(s.scalars(select(Asset)))
    engine.dispose()
    assert len(assets) == info["states"].get("published", 0)
    for asset in assets:
        data = store.get(asset.key)  # the row points at a real object with those bytes
        assert sha256_bytes(data) == asset.sha256 == marks[asset.shot_id].image_sha256
        assert asset.key.startswith("acme/SKU-")

    # Running again finds nothing planned; publishing again changes nothing.
    assert run_line(tmp_settings, progress=False).total == 0
    enqueue_publish(ids, tmp_settings)
    assert_line_sound(tmp_settings, ids)


def test_sweep_requeues_stalled_shots_but_not_running_batches(tmp_settings: Settings) -> None:
    from catalog.models import Shot
    from tasks.dispatch import sweep_stalled
    from tasks.line.orchestrator import generate_shots

    settings = tmp_settings.model_copy(
        update={
            "generator_factory": "tasks.fakes:fixed_image_generator",
            "gate_factory": "tasks.fakes:pass_through_gate",
            "visibility_timeout_s": 3600,
        }
    )
    migrate.upgrade(settings.database_url)
    ids = seed_shots(settings, 3)
    from tasks.context import context_for

    ctx = context_for(settings)
    # Shot 0: generated, but its gate message was lost. Shot 1: claimed by a worker that is
    # (as far as anyone knows) still generating. Shot 2: planned and waiting for `run`.
    generate_shots(ctx, [ids[0]], gate_on="cpu")
    with ctx.sessions.begin() as s:
        s.get(Shot, ids[1]).state = "generating"

    assert sweep_stalled(settings, older_than_s=0) == {"generated": 1}
    with ctx.sessions.begin() as s:
        states = {i: s.get(Shot, i).state for i in ids}
    assert states == {ids[0]: "pending_review", ids[1]: "generating", ids[2]: "planned"}
    # Scoped to a run, a planned shot is stalled too (its message may have been lost).
    assert sweep_stalled(settings, ids, older_than_s=0) == {"planned": 1}


def test_sweep_resends_what_a_broker_restart_lost(tmp_settings: Settings) -> None:
    """A planned shot whose generate message was sent and never arrived (Redis restarted and
    dropped its queue) is re-sent by the fleet-wide sweep once the visibility window has
    passed; one enqueued just now, or never enqueued (waiting for `run`), is left alone."""
    from datetime import timedelta

    from catalog.models import Shot, utcnow
    from tasks.context import context_for
    from tasks.dispatch import enqueue_generate, sweep_stalled

    settings = tmp_settings.model_copy(
        update={
            "generator_factory": "tasks.fakes:fixed_image_generator",
            "gate_factory": "tasks.fakes:pass_through_gate",
            "visibility_timeout_s": 60,
        }
    )
    migrate.upgrade(settings.database_url)
    ids = seed_shots(settings, 3)
    ctx = context_for(settings)
    long_ago = utcnow() - timedelta(hours=2)
    with ctx.sessions.begin() as s:
        lost, fresh = s.get(Shot, ids[0]), s.get(Shot, ids[1])
        assert lost is not None and fresh is not None
        lost.enqueued_at, lost.updated_at = long_ago, long_ago
        fresh.enqueued_at, fresh.updated_at = utcnow(), long_ago
    assert sweep_stalled(settings, older_than_s=0) == {"planned": 1}
    with ctx.sessions.begin() as s:
        states = {i: s.get(Shot, i).state for i in ids}
    assert states == {ids[0]: "pending_review", ids[1]: "planned", ids[2]: "planned"}
    # Sending records the time (before the send: a send that is lost is still swept).
    before = utcnow()
    enqueue_generate([ids[2]], settings)
    with ctx.sessions.begin() as s:
        shot = s.get(Shot, ids[2])
        assert shot is not None and shot.enqueued_at is not None
        assert shot.enqueued_at.replace(tzinfo=before.tzinfo) >= before


# --- one in-process mechanism: the Celery tasks, run eagerly ------------------------------

FLAKY = "tests.tasks.test_inprocess"
FLAKY_CALLS: list[int] = []


def _flaky_calls() -> list[int]:
    """The batch sizes the factory's generators saw (pytest may import this file under
    another name than the factory spec does, so ask the module the spec names)."""
    calls: list[int] = importlib.import_module(FLAKY).FLAKY_CALLS
    return calls


class _FlakyGenerator:
    """Fails with a transient error the first ``fails`` batches, then makes real images."""

    architecture = ""

    def __init__(self, settings: Settings, model_id: str, fails: int) -> None:
        from tasks.fakes import fixed_image_generator

        self.model_id = model_id
        self.inner = fixed_image_generator(settings, model_id)
        self.fails = fails

    def inpainter(self) -> None:
        return None

    def generate(self, shots: Any, batch_id: str | None = None) -> Any:
        FLAKY_CALLS.append(len(shots))
        if len(FLAKY_CALLS) <= self.fails:
            raise ConnectionError("the blob store blinked")
        return self.inner.generate(shots, batch_id=batch_id)


def flaky_once(settings: Settings, model_id: str) -> _FlakyGenerator:
    return _FlakyGenerator(settings, model_id, fails=1)


def flaky_always(settings: Settings, model_id: str) -> _FlakyGenerator:
    return _FlakyGenerator(settings, model_id, fails=10**6)


def _flaky_settings(tmp_settings: Settings, factory: str) -> Settings:
    settings = tmp_settings.model_copy(
        update={
            "generator_factory": f"{FLAKY}:{factory}",
            "gate_factory": "tasks.fakes:pass_through_gate",
            "task_max_retries": 2,
        }
    )
    migrate.upgrade(settings.database_url)
    return settings


def test_in_process_transient_error_is_retried_by_the_task(tmp_settings: Settings) -> None:
    settings = _flaky_settings(tmp_settings, "flaky_once")
    _flaky_calls().clear()
    seed_shots(settings, 3)
    summary = run_line(settings, progress=False)
    assert summary.mode == "in-process" and summary.complete
    assert summary.counts == {"pending_review": 3}
    assert _flaky_calls() == [3, 3]  # the batch failed once, its retry made all three


def test_in_process_transient_error_gives_up_after_max_retries(tmp_settings: Settings) -> None:
    settings = _flaky_settings(tmp_settings, "flaky_always")
    _flaky_calls().clear()
    seed_shots(settings, 2)
    with pytest.raises(ConnectionError, match="blinked"):
        run_line(settings, progress=False)
    assert len(_flaky_calls()) == 1 + settings.task_max_retries  # never an endless loop


def test_celery_app_is_configured_from_settings_not_at_import(tmp_path: Path) -> None:
    probe = (
        "from pipeline.settings import Settings\n"
        "from tasks.celery_app import ShotlineCelery, app\n"
        "assert not app.configured\n"
        "other = ShotlineCelery()\n"
        "other.configure(Settings(_env_file=None, broker_url='redis://127.0.0.1:6379/9',"
        " task_max_retries=5))\n"
        "assert other.conf.broker_url == 'redis://127.0.0.1:6379/9'\n"
        "assert other.settings.task_max_retries == 5\n"
        "assert app.conf.broker_url == 'redis://127.0.0.1:6379/7'  # a `celery -A` process\n"
        "from tasks.dispatch import generate_batch\n"
        "assert generate_batch.max_retries == 3 and generate_batch.acks_late\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOTLINE_")}
    env.update(
        SHOTLINE_BROKER_URL="redis://127.0.0.1:6379/7",
        SHOTLINE_TASK_MAX_RETRIES="3",
        SHOTLINE_VAR_DIR=str(tmp_path / "var"),
        PYTHONPATH=str(ROOT),
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
