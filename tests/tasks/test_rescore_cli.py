"""``shotline gate rescore`` on SQLite and Postgres: the line gates shots with the real
ClipFilter (a counting colour encoder), then the brand's policy changes.

Thresholds only: the stored scores are re-decided and the encoder is never called. A new
concept: the stored final images are encoded again. Every pass adds a filter_results row.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from catalog import migrate
from catalog.db import make_engine, make_sessionmaker
from catalog.embeddings import embedding_of
from catalog.models import FilterResult, Shot
from catalog.status import throughput
from pipeline.gate.stage import ClipGate, load_gate
from pipeline.settings import Settings
from tasks.cli.app import app
from tasks.context import reset_contexts
from tasks.runner import run_line
from tests.conftest import ROOT, create_pg_database, drop_pg_database
from tests.pipeline.test_clip_filter import FakeEncoder
from tests.tasks.conftest import approve_all, fleet_settings, make_bucket, seed_shots

ENCODER = FakeEncoder()


def counting_gate(settings: Settings) -> ClipGate:
    """The real gate (ClipFilter, watermark) around the module's counting encoder."""
    return load_gate(settings, encoder=ENCODER)


@pytest.fixture(params=["sqlite", "postgres"])
def cli_settings(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    pg = request.param == "postgres"
    url = create_pg_database("shotline_rescore") if pg else f"sqlite:///{tmp_path / 'db.sqlite'}"
    brands = tmp_path / "brands"
    brands.mkdir()
    shutil.copy(ROOT / "samples" / "brands" / "acme.yaml", brands / "acme.yaml")
    values = {
        "DATABASE_URL": url,
        "VAR_DIR": str(tmp_path / "var"),
        "BLOB_ROOT": str(tmp_path / "var" / "blobs"),
        "BLOB_BACKEND": "local",
        "BRANDS_DIR": str(brands),
        "MODEL_CACHE_DIR": str(ROOT / "var" / "models"),
        "DEVICE": "cpu",
        "GENERATOR_FACTORY": "tasks.fakes:fixed_image_generator",
        "GATE_FACTORY": f"{__name__}:counting_gate",
    }
    for name in list(os.environ):
        if name.startswith("SHOTLINE_"):
            monkeypatch.delenv(name)
    for key, value in values.items():
        monkeypatch.setenv(f"SHOTLINE_{key}", value)
    monkeypatch.chdir(tmp_path)
    reset_contexts()
    migrate.upgrade(url)
    try:
        yield Settings()
    finally:
        reset_contexts()
        if pg:
            drop_pg_database(url)


def edit_brand(settings: Settings, old: str, new: str) -> None:
    path = Path(settings.brands_dir) / "acme.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    reset_contexts()  # a fresh invocation reads the YAML again


def rescore(*args: str) -> dict:  # type: ignore[type-arg]
    res = CliRunner().invoke(app, ["gate", "rescore", "--brand", "acme", "--json", *args])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def rows(settings: Settings) -> tuple[dict[int, str], dict[int, list[FilterResult]]]:
    engine = make_engine(settings.database_url)
    try:
        with make_sessionmaker(engine)() as s:
            states = dict(s.execute(select(Shot.id, Shot.state)).all())
            history: dict[int, list[FilterResult]] = {}
            for fr in s.scalars(select(FilterResult).order_by(FilterResult.id)):
                history.setdefault(fr.shot_id, []).append(fr)
            assert all(embedding_of(s, sid) is not None for sid in states)
            return states, history
    finally:
        engine.dispose()


def test_rescore_thresholds_without_encoder_then_concepts_reencode(cli_settings: Settings) -> None:
    ids = seed_shots(cli_settings, 3)
    assert run_line(cli_settings, brand="acme", progress=False).counts == {"pending_review": 3}
    approved = approve_all(cli_settings, ids[:1])  # a reviewer already kept the first one
    states, history = rows(cli_settings)
    assert all(len(history[i]) == 1 for i in ids)
    first_version = history[ids[0]][0].policy_version

    # 1. Thresholds only: every competitor score (0.0 from the colour encoder) now triggers.
    edit_brand(cli_settings, "competitor_threshold: 0.3", "competitor_threshold: -0.5")
    ENCODER.image_calls.clear()
    dry = rescore("--dry-run")
    assert dry["modes"] == {"re-decided": 3} and "recorded" not in dry
    assert all(len(h) == 1 for h in rows(cli_settings)[1].values())  # a dry run writes nothing
    out = rescore()
    assert ENCODER.image_calls == []  # re-decided from stored scores: nothing encoded
    assert out["modes"] == {"re-decided": 3} and out["recorded"] == 3
    assert out["outcomes"] == {"attention": 1, "rejected": 2}
    states, history = rows(cli_settings)
    assert states[approved[0]] == "approved"  # never silently unkept: reported instead
    assert all(states[i] == "rejected" for i in ids[1:])
    for i in ids:
        old, new = history[i]
        assert (old.current, new.current) == (False, True)
        assert old.decision == "pending_review" and new.decision == "rejected"
        assert "competitor:Nike" in new.reasons and new.policy_version != first_version
        # Same concepts: the concepts half of the version is unchanged.
        assert (
            new.policy_version.split(":")[-1].split(".")[0]
            == first_version.split(":")[-1].split(".")[0]
        )
    assert rescore()["modes"] == {"already current": 3}  # idempotent: no new rows

    # 2. A new concept: the stored scores cannot answer it, the final images are re-encoded.
    edit_brand(cli_settings, "competitor_threshold: -0.5", "competitor_threshold: 0.3")
    edit_brand(
        cli_settings,
        "  concepts:\n",
        '  concepts:\n    - {name: smoke, prompt: "smoke, haze", threshold: 0.5}\n',
    )
    out = rescore()
    assert sum(ENCODER.image_calls) >= 3  # the crops of three final images
    assert out["modes"] == {"re-encoded": 3}
    assert out["outcomes"] == {"unchanged": 1, "now_passes": 2}
    states, history = rows(cli_settings)
    assert all(states[i] == "rejected" for i in ids[1:])  # a rejection is undone by a human
    for i in ids:
        assert len(history[i]) == 3 and [fr.current for fr in history[i]] == [False, False, True]
        assert any(r["name"] == "smoke" for r in history[i][-1].scores)
    engine = make_engine(cli_settings.database_url)
    try:
        with make_sessionmaker(engine)() as s:
            # Three passes each, and each shot is still gated once in the line's figures.
            assert throughput(s, minutes=60)["gated"] == 3
    finally:
        engine.dispose()


def test_rescore_unknown_brand_is_one_line(cli_settings: Settings) -> None:
    res = CliRunner().invoke(app, ["gate", "rescore", "--brand", "nope"])
    assert res.exit_code == 2
    assert "nope" in res.output and "Traceback" not in res.output


@pytest.mark.slow
def test_rescore_reencodes_on_a_cpu_worker(
    tmp_path: Path,
    pg_db: str,
    fleet_redis: str,
    moto_server: str,
    make_fleet: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a broker the re-encodes are the cpu queue's: a real `celery worker` encodes the
    stored final images, the CLI only waits for the new passes and reports them."""
    brands = tmp_path / "brands"
    brands.mkdir()
    shutil.copy(ROOT / "samples" / "brands" / "acme.yaml", brands / "acme.yaml")
    settings, env = fleet_settings(
        tmp_path,
        pg_db,
        fleet_redis,
        moto_server,
        make_bucket(moto_server),
        brands_dir=str(brands),
        gate_factory="tests.tasks.test_rescore_cli:counting_gate",
    )
    ids = seed_shots(settings, 3)
    fleet = make_fleet(settings, env)
    fleet.start("worker", queues="gpu.tiny,cpu")
    line = run_line(settings, progress=False, timeout_s=60)
    assert line.counts == {"pending_review": 3}, line.failures
    edit_brand(
        settings,
        "  concepts:\n",
        '  concepts:\n    - {name: smoke, prompt: "smoke, haze", threshold: 0.5}\n',
    )
    for name in [n for n in os.environ if n.startswith("SHOTLINE_")]:
        monkeypatch.delenv(name)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    ENCODER.image_calls.clear()
    out = rescore("--timeout", "60")
    assert out["modes"] == {"re-encoded": 3} and out["recorded"] == 3, out
    assert ENCODER.image_calls == []  # this process encoded no image: the worker did
    assert "Task shotline.regate_shots" in fleet.log_tail(10**6)
    _, history = rows(settings)
    for i in ids:
        assert len(history[i]) == 2 and history[i][-1].current
        assert any(r["name"] == "smoke" for r in history[i][-1].scores)
