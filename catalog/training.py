"""Queries for LoRA training runs (``lora_trainings``): create, progress, finish, look up.

A run's row is written before any step runs, so a redelivered or resumed job finds it (and
its ``run_key``, the checkpoints' blob prefix) again; progress is written as training goes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from catalog.models import LoraAdapter, LoraTraining, TrainingState


class TrainingNotFound(LookupError):
    pass


def create_training(
    session: Session,
    *,
    brand_id: int | None,
    name: str,
    trigger_word: str,
    source_uri: str,
    dataset_digest: str,
    files: list[dict[str, str]],
    base_model: str,
    hyperparameters: dict[str, Any],
    warnings: Iterable[str] = (),
) -> LoraTraining:
    row = LoraTraining(
        run_key=uuid.uuid4().hex,
        brand_id=brand_id,
        name=name,
        trigger_word=trigger_word,
        source_uri=source_uri,
        dataset_digest=dataset_digest,
        files=files,
        base_model=base_model,
        hyperparameters=hyperparameters,
        state=TrainingState.queued.value,
        steps_total=int(hyperparameters["steps"]),
        steps_done=0,
        progress={},
        loss_summary={},
        checkpoints=[],
        warnings=list(warnings),
    )
    session.add(row)
    session.flush()
    return row


def get_training(session: Session, run_id: int) -> LoraTraining:
    row = session.get(LoraTraining, run_id)
    if row is None:
        raise TrainingNotFound(f"no training run {run_id}")
    return row


def list_trainings(session: Session, brand_id: int | None = None) -> list[LoraTraining]:
    query = select(LoraTraining).order_by(LoraTraining.id)
    if brand_id is not None:
        query = query.where(LoraTraining.brand_id == brand_id)
    return list(session.scalars(query))


def record_progress(
    row: LoraTraining, step: int, loss: float, eta_s: float | None, checkpoints: list[str] | None
) -> None:
    row.state = TrainingState.running.value
    row.steps_done = step
    row.progress = {"step": step, "loss": loss, "eta_s": eta_s}
    if checkpoints is not None:
        row.checkpoints = checkpoints


def finish_training(
    session: Session,
    row: LoraTraining,
    *,
    adapter_sha256: str,
    adapter_uri: str,
    base_model_digest: str | None,
    loss_summary: dict[str, float],
    steps_done: int,
    validation_key: str | None = None,
) -> LoraAdapter:
    """Mark ``row`` done and record (or reuse) the ``lora_adapters`` row of its output."""
    adapter = session.scalar(
        select(LoraAdapter).where(
            LoraAdapter.name == row.name, LoraAdapter.sha256 == adapter_sha256
        )
    )
    if adapter is None:
        adapter = LoraAdapter(name=row.name, sha256=adapter_sha256, default_weight=1.0)
        session.add(adapter)
    adapter.uri = adapter_uri
    adapter.trigger_word = row.trigger_word
    adapter.version = f"train-{row.id}"
    session.flush()
    row.adapter_id = adapter.id
    row.adapter_sha256 = adapter_sha256
    row.adapter_uri = adapter_uri
    row.base_model_digest = base_model_digest
    row.loss_summary = loss_summary
    row.steps_done = steps_done
    row.validation_key = validation_key
    row.state = TrainingState.done.value
    row.error = None
    return adapter


def fail_training(row: LoraTraining, reason: str) -> None:
    row.state = TrainingState.failed.value
    row.error = reason[:2000]


def trainings_for_pins(session: Session, sha256s: Iterable[str]) -> dict[str, LoraTraining]:
    """The finished run behind each adapter sha256 that a training produced."""
    pins = {s.lower() for s in sha256s if s}
    if not pins:
        return {}
    rows = session.scalars(
        select(LoraTraining)
        .where(LoraTraining.adapter_sha256.in_(pins))
        .where(LoraTraining.state == TrainingState.done.value)
        .order_by(LoraTraining.id)
    )
    return {r.adapter_sha256: r for r in rows if r.adapter_sha256}


def training_json(row: LoraTraining) -> dict[str, Any]:
    return {
        "id": row.id,
        "run_key": row.run_key,
        "name": row.name,
        "trigger_word": row.trigger_word,
        "state": row.state,
        "source_uri": row.source_uri,
        "dataset_digest": row.dataset_digest,
        "images": len(row.files or []),
        "base_model": row.base_model,
        "base_model_digest": row.base_model_digest,
        "hyperparameters": row.hyperparameters,
        "steps_done": row.steps_done,
        "steps_total": row.steps_total,
        "progress": row.progress,
        "loss_summary": row.loss_summary,
        "checkpoints": row.checkpoints,
        "warnings": row.warnings,
        "error": row.error,
        "adapter": None
        if row.adapter_sha256 is None
        else {"id": row.adapter_id, "sha256": row.adapter_sha256, "uri": row.adapter_uri},
        "validation_key": row.validation_key,
    }
