"""The embedded default: no broker, SQLite, local blobs, in-process, with the real tiny
generator and the real gate (CLIP + watermark). Tiny-preset images are random noise."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from catalog import migrate
from catalog.db import make_engine, make_sessionmaker
from catalog.models import Asset, Generation, Watermark
from pipeline.settings import Settings
from pipeline.storage import LocalBlobStore, sha256_bytes
from tasks.dispatch import enqueue_publish
from tasks.runner import run_line
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

    approve_all(tmp_settings, ids, reviewer="test")
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
    from tasks.steps import generate

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
    generate(ctx, [ids[0]])
    with ctx.sessions.begin() as s:
        s.get(Shot, ids[1]).state = "generating"

    assert sweep_stalled(settings, older_than_s=0) == {"generated": 1}
    with ctx.sessions.begin() as s:
        states = {i: s.get(Shot, i).state for i in ids}
    assert states == {ids[0]: "pending_review", ids[1]: "generating", ids[2]: "planned"}
    # Scoped to a run, a planned shot is stalled too (its message may have been lost).
    assert sweep_stalled(settings, ids, older_than_s=0) == {"planned": 1}
