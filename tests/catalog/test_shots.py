"""The shot state machine and its idempotent writes, on SQLite and on Postgres."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from catalog.models import Asset, FilterResult, Generation, Shot, ShotState, Watermark
from catalog.shots import (
    ALLOWED,
    InvalidTransition,
    claim_shots,
    final_files,
    hand_back,
    raw_keys,
    record_assets,
    record_gate,
    record_generation,
    retry_or_fail,
    shot_info,
    shot_params,
    shots_in_state,
    stored_brand_configs,
    transition,
)
from pipeline.failures import Failure, FailureKind
from pipeline.storage import BlobInfo
from tests.factories import (
    make_brand,
    make_generation,
    make_product,
    make_shot,
    make_watermark,
)

GEN = {
    "blob_backend": "local",
    "blob_key": "raw/a/b/c/" + "0" * 64 + ".png",
    "sha256": "0" * 64,
    "size_bytes": 10,
    "model_digest": "d" * 64,
    "timings": {"total_s": 0.1},
    "device": "cpu",
    "library_versions": {"torch": "x"},
    "batch_id": "b1",
}
MARK = {
    "method": "dwtDct",
    "payload": "00ff",
    "verified": True,
    "bit_accuracy": 1.0,
    "image_backend": "local",
    "image_key": "final/a/b/c/" + "1" * 64 + ".png",
    "image_sha256": "1" * 64,
    "image_size": 11,
    "content_type": "image/png",
    "c2pa_signed": False,
}


def _shot(session: Session, **kw: Any) -> Shot:
    brand = make_brand(session)
    rev = make_product(session, brand, title="Linen Cushion")
    return make_shot(session, rev, **kw)


def _count(session: Session, model: type) -> int:
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_shot_params_and_info(session: Session) -> None:
    shot = _shot(
        session,
        adapters=[{"name": "style", "sha256": "a" * 64, "weight": 0.8, "uri": "x.safetensors"}],
    )
    p = shot_params(shot)
    assert (p.shot_id, p.width, p.height, p.model_id) == (shot.id, 64, 64, "tiny")
    assert p.adapters[0].name == "style" and p.adapters[0].weight == 0.8
    info = shot_info(session, [shot])[shot.id]
    assert info.sku.endswith("-RED") and info.template == "hero_white"
    assert "Linen Cushion" in info.product_text and "Red" in info.product_text


def test_claim_counts_attempts_and_gives_up(session: Session) -> None:
    shot = _shot(session)
    for attempt in (1, 2, 3):
        claim = claim_shots(session, [shot.id], max_attempts=3)
        assert [s.id for s in claim.claimed] == [shot.id]
        assert shot.state == ShotState.generating and shot.attempts == attempt
        # Claimed while still generating: its last worker was lost.
        assert claim.redelivered == ([] if attempt == 1 else [shot])
    # A retry after a transient error re-claims without spending an attempt.
    assert claim_shots(session, [shot.id], max_attempts=3, count_attempt=False).claimed
    assert shot.attempts == 3
    # The worker was lost a third time: the next delivery gives up with a reason.
    claim = claim_shots(session, [shot.id], max_attempts=3)
    assert claim.failed == [shot] and shot.state == ShotState.failed
    assert "gave up after 3 attempts" in (shot.error or "")
    assert not claim_shots(session, [shot.id]).claimed  # failed is never claimed again


def test_record_generation_gate_asset_are_idempotent(session: Session) -> None:
    shot = _shot(session)
    before = {m: _count(session, m) for m in (Generation, FilterResult, Watermark, Asset)}
    claim_shots(session, [shot.id])
    assert record_generation(session, shot, **GEN)
    assert not record_generation(session, shot, **GEN)  # redelivered: a no-op
    assert shot.state == ShotState.generated and shot.model_digest == "d" * 64

    gate = {
        "decision": "pending_review",
        "policy_version": "v1",
        "clip_model": "tiny",
        "scores": [],
        "reasons": [],
        "watermark": MARK,
    }
    assert record_gate(session, shot, **gate)
    assert not record_gate(session, shot, **gate)
    assert shot.state == ShotState.pending_review

    transition(shot, ShotState.approved)
    asset = BlobInfo(
        backend="local",
        bucket=None,
        key=f"acme/x/hero_white/{shot.id}.png",
        sha256="1" * 64,
        size=11,
        etag=None,
        content_type="image/png",
    )
    assert record_assets(session, [(shot, asset)]) == []  # published by this call
    assert record_assets(session, [(shot, asset)]) == [shot.id]  # redelivered: a no-op
    assert shot.state == ShotState.published
    after = {m: _count(session, m) for m in (Generation, FilterResult, Watermark, Asset)}
    assert {m: after[m] - before[m] for m in after} == dict.fromkeys(after, 1)


def test_record_assets_publishes_a_batch_in_one_statement_and_refuses_duplicate_bytes(
    session: Session,
) -> None:
    brand = make_brand(session)
    rev = make_product(session, brand, title="Linen Cushion")
    shots = [make_shot(session, rev, template=t, state="approved") for t in ("a", "b", "c")]
    session.flush()

    def up(name: str) -> BlobInfo:
        return BlobInfo("s3", "bucket", f"acme/x/t/{name}.png", name * 64, 5, "e", "image/png")

    # b carries the same bytes (same content-addressed key) as a, in the same batch.
    batch = [(shots[0], up("a")), (shots[1], up("a")), (shots[2], up("c"))]
    statements: list[str] = []
    from sqlalchemy import event

    engine = session.get_bind()
    listener = lambda *args: statements.append(str(args[2]))  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        assert record_assets(session, batch) == [shots[1].id]
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert sum(st.lstrip().upper().startswith("INSERT INTO ASSETS") for st in statements) == 1
    assert [s.state for s in shots] == ["published", "failed", "published"]
    assert f"already published as shot {shots[0].id}" in (shots[1].error or "")
    owners = dict(session.execute(select(Asset.key, Asset.shot_id)).all())
    assert owners["acme/x/t/a.png"] == shots[0].id and owners["acme/x/t/c.png"] == shots[2].id
    # Redelivered: nothing is approved any more, nothing is written twice.
    assert record_assets(session, batch) == [s.id for s in shots]
    assert session.scalar(select(func.count()).select_from(Asset)) == 2


def test_insert_ignore_survives_a_row_written_by_another_worker(session: Session) -> None:
    """Two workers racing: the second INSERT hits the unique shot_id and is ignored."""
    shot = _shot(session)
    claim_shots(session, [shot.id])
    session.add(Generation(shot_id=shot.id, **GEN))
    session.flush()
    assert record_generation(session, shot, **GEN)  # state moves on, no second row
    n = session.scalar(select(func.count()).where(Generation.shot_id == shot.id))
    assert n == 1


def test_transitions_are_checked(session: Session) -> None:
    shot = _shot(session)
    with pytest.raises(InvalidTransition, match="cannot go from 'planned' to 'published'"):
        transition(shot, ShotState.published)
    claim_shots(session, [shot.id], max_attempts=2)
    assert (
        retry_or_fail(shot, Failure(FailureKind.generation, "boom"), max_attempts=2)
        and shot.state == ShotState.planned
    )
    claim_shots(session, [shot.id], max_attempts=2)
    assert not retry_or_fail(shot, Failure(FailureKind.generation, "boom"), max_attempts=2)
    assert shot.state == ShotState.failed and shot.error == "failed after 2 attempts: boom"
    assert shot.error_kind == FailureKind.generation


def test_failure_kinds_follow_the_error(session: Session) -> None:
    """The kind is stored with the reason: a retry keeps the last error's kind, a shot that
    is given up on keeps it too, and one whose worker was just lost is ``worker_lost``."""
    shot = _shot(session)
    claim_shots(session, [shot.id], max_attempts=2)
    assert retry_or_fail(shot, Failure(FailureKind.oom, "out of memory"), max_attempts=2)
    assert (shot.state, shot.error_kind) == (ShotState.planned, "oom")
    claim_shots(session, [shot.id], max_attempts=2)
    assert shot.error_kind == "oom"  # still the last error's, while generating again
    claim_shots(session, [shot.id], max_attempts=2)  # lost again: out of attempts
    assert shot.state == ShotState.failed and shot.error_kind == "oom"
    lost = _shot(session)
    claim_shots(session, [lost.id], max_attempts=1)
    claim_shots(session, [lost.id], max_attempts=1)  # its worker died; no error recorded
    assert lost.state == ShotState.failed and lost.error_kind == FailureKind.worker_lost
    assert "worker lost while generating" in (lost.error or "")
    back = _shot(session)
    claim_shots(session, [back.id], max_attempts=3)
    hand_back(back, "batch split after: x")
    assert back.error_kind is None  # handed back: not the shot's failure


def test_rejected_needs_no_watermark_but_kept_does(session: Session) -> None:
    shot = _shot(session, state=ShotState.generated.value)
    with pytest.raises(ValueError, match="needs its watermark"):
        record_gate(
            session,
            shot,
            decision="pending_review",
            policy_version="v1",
            clip_model="tiny",
            scores=[],
            reasons=[],
            watermark=None,
        )
    assert record_gate(
        session,
        shot,
        decision="rejected",
        policy_version="v1",
        clip_model="tiny",
        scores=[],
        reasons=["nsfw"],
        watermark=None,
    )
    assert shot.state == ShotState.rejected


def test_hand_back_returns_a_shot_to_planned_whatever_its_attempts(session: Session) -> None:
    shot = _shot(session)
    claim_shots(session, [shot.id], max_attempts=1)
    assert shot.attempts == 1  # out of attempts: retry_or_fail would fail it
    hand_back(shot, "batch split after: x" * 1000)
    assert shot.state == ShotState.planned and (shot.error or "").startswith("batch split")
    assert len(shot.error or "") == 4000
    with pytest.raises(InvalidTransition):
        hand_back(shot, "only a generating shot can be handed back")


def test_step_reads_load_shots_raw_keys_final_files_and_brand_configs(session: Session) -> None:
    brand = make_brand(session, config={"name": "stored", "base_model": "tiny"})
    rev = make_product(session, brand, title="Linen Cushion")
    done, bare = (make_shot(session, rev, template=t, state="generated") for t in ("a", "b"))
    planned = make_shot(session, rev, template="c")
    gen = make_generation(session, done)
    mark = make_watermark(session, done)

    ids = [done.id, bare.id, planned.id]
    assert {s.id for s in shots_in_state(session, ids, ShotState.generated)} == {done.id, bare.id}
    assert raw_keys(session, ids) == {done.id: gen.blob_key}
    assert final_files(session, ids) == {
        done.id: BlobInfo(
            mark.image_backend,
            None,
            mark.image_key,
            mark.image_sha256,
            mark.image_size,
            None,
            mark.content_type,
        )
    }
    assert stored_brand_configs(session, [brand.name, "no-such-brand"]) == {
        brand.name: {"name": "stored", "base_model": "tiny"}
    }


def test_the_states_are_the_lines_own_and_none_is_gated() -> None:
    # "gated" was listed but nothing entered it; the states are exactly the line's.
    assert "gated" not in set(ShotState)
    assert all("gated" not in nexts for nexts in ALLOWED.values())
    assert set(ALLOWED) == set(ShotState)
