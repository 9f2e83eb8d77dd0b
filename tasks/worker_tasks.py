"""The Celery tasks: thin wrappers over ``tasks.steps`` that enqueue the next step after commit.

Every step commits before it returns, so "enqueue after return" is "enqueue after commit": a
worker never announces rows that could still roll back. Transient errors (DB connection,
S3 5xx, broker hiccup) retry with exponential backoff and jitter, up to a cap.
"""

from __future__ import annotations

from typing import Any

from celery import Task

from pipeline.settings import get_settings
from tasks import dispatch, steps
from tasks.celery_app import (
    TASK_GATE,
    TASK_GENERATE,
    TASK_IMPORT,
    TASK_INGEST,
    TASK_PUBLISH,
    TASK_SWEEP,
    app,
)
from tasks.context import context_for

_settings = get_settings()
RETRY: dict[str, Any] = {
    "bind": True,
    "autoretry_for": steps.transient_errors(),
    "retry_backoff": 0.5,
    "retry_backoff_max": _settings.task_retry_backoff_max_s,
    "retry_jitter": True,
    "max_retries": _settings.task_max_retries,
    "acks_late": True,
}


def _summary(res: steps.StepResult) -> dict[str, int]:
    return {k: len(v) for k, v in vars(res).items()}


@app.task(name=TASK_GENERATE, **RETRY)
def generate_batch(self: Task, shot_ids: list[int], batch_id: str | None = None) -> dict[str, int]:
    ctx = context_for()
    # Only a first delivery or a redelivery (lost worker) counts as an attempt, not a retry.
    first = not self.request.retries
    res = steps.generate(ctx, shot_ids, batch_id=batch_id, first_delivery=first)
    dispatch.enqueue_gate(res.done, ctx.settings)
    dispatch.enqueue_generate(res.retry, ctx.settings, single=True, countdown=1.0)
    return _summary(res)


@app.task(name=TASK_GATE, **RETRY)
def gate_shot(self: Task, shot_ids: list[int] | int) -> dict[str, int]:
    ids = [shot_ids] if isinstance(shot_ids, int) else shot_ids
    return _summary(steps.gate(context_for(), ids))


@app.task(name=TASK_PUBLISH, **RETRY)
def publish_shot(self: Task, shot_ids: list[int] | int) -> dict[str, int]:
    ids = [shot_ids] if isinstance(shot_ids, int) else shot_ids
    return _summary(steps.publish(context_for(), ids))


@app.task(name=TASK_IMPORT, **RETRY)
def import_catalog(self: Task, source: str, brand: str | None = None) -> dict[str, Any]:
    from tasks.ingest import ingest_source_file

    return ingest_source_file(context_for(), source, brand)


@app.task(name=TASK_INGEST, **RETRY)
def ingest_due_catalogs(self: Task) -> dict[str, Any]:
    from tasks.ingest import ingest_due

    return ingest_due(context_for())


@app.task(name=TASK_SWEEP, **RETRY)
def sweep_stalled(self: Task) -> dict[str, int]:
    return dispatch.sweep_stalled(context_for().settings)
