"""Training runs in the lineage: asset -> adapter -> training run -> dataset digest, and back."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import Session

from catalog.lineage import assets_by_training, shot_lineage
from catalog.models import TrainingState
from catalog.training import (
    TrainingNotFound,
    create_training,
    fail_training,
    finish_training,
    get_training,
    record_progress,
    training_json,
)
from tests.factories import make_brand, make_gated_shot

SHA = "d4" * 32


def _run(session: Session, brand: Any, name: str = "acme_mug") -> Any:
    return create_training(
        session,
        brand_id=brand.id,
        name=name,
        trigger_word="acmestyle",
        source_uri="samples/lora_train",
        dataset_digest="e5" * 32,
        files=[{"file": "mug_00.png", "sha256": "f6" * 32, "caption_sha256": "a7" * 32}],
        base_model="tiny",
        hyperparameters={"steps": 8, "rank": 4},
    )


def test_asset_lineage_reaches_dataset_digest_and_back(session: Session) -> None:
    brand = make_brand(session)
    run = _run(session, brand)
    record_progress(run, 4, 0.9, 1.5, ["training/x/checkpoints/step-00000004.safetensors"])
    assert run.state == TrainingState.running and run.progress["step"] == 4
    adapter = finish_training(
        session,
        run,
        adapter_sha256=SHA,
        adapter_uri="file:///loras/acme_mug.safetensors",
        base_model_digest="b8" * 32,
        loss_summary={"first": 1.0, "last": 0.8},
        steps_done=8,
    )
    assert adapter.id == run.adapter_id and adapter.sha256 == SHA
    ref = {"name": "acme_mug", "sha256": SHA, "weight": 1.0, "uri": adapter.uri}
    used = make_gated_shot(
        session, brand=brand, adapters=[ref], published=True, reviews=[("approve", "alice", "ok")]
    )
    other = make_gated_shot(
        session,
        brand=brand,
        adapters=[{**ref, "sha256": "c9" * 32}],
        published=True,
        reviews=[("approve", "alice", "ok")],
    )
    session.flush()

    chain = shot_lineage(session, used.id)
    assert chain is not None
    training = chain["loras"][0]["training"]
    assert training["id"] == run.id and training["dataset_digest"] == "e5" * 32
    assert training["base_model_digest"] == "b8" * 32
    other_chain = shot_lineage(session, other.id)
    assert other_chain is not None and "training" not in other_chain["loras"][0]

    assert [r["shot_id"] for r in assets_by_training(session, run.id)] == [used.id]
    assert training_json(get_training(session, run.id))["adapter"]["sha256"] == SHA


def test_failed_and_unknown_runs(session: Session) -> None:
    run = _run(session, make_brand(session), name="broken")
    fail_training(run, "dataset changed")
    assert run.state == TrainingState.failed and run.error == "dataset changed"
    assert assets_by_training(session, run.id) == []
    with pytest.raises(TrainingNotFound):
        get_training(session, 99999999)
