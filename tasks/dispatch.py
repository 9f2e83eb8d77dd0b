"""The line's Celery tasks and the helpers that enqueue them: generate -> gate -> publish.

Each task enqueues the next step, so the tasks and their enqueue helpers live together here;
pure grouping into GPU batches is here too, queue names in ``tasks.queues``.

Every step commits before it returns, so "enqueue after return" is "enqueue after commit": a
worker never announces rows that could still roll back. Messages carry only ids and JSON.
Transient errors (DB connection, S3 5xx, broker hiccup) retry with exponential backoff and
jitter, up to a cap (``ShotlineTask``). With no broker configured (the embedded default) the
same calls run the same tasks in-process (``tasks.celery_app.submit``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import timedelta
from typing import Any

from celery import Task

from catalog import status as progress
from catalog.models import ShotState, utcnow
from pipeline.settings import Settings
from pipeline.storage import PermanentStorageError
from tasks.celery_app import app, submit, task_settings
from tasks.context import WorkerContext, context_for
from tasks.line.orchestrator import gate_shots, generate_shots, publish
from tasks.line.results import transient_errors
from tasks.queues import (
    QUEUE_CPU,
    TASK_GATE,
    TASK_GENERATE,
    TASK_PUBLISH,
    TASK_SWEEP,
    gpu_queue,
    model_key,
    models_for_queue,
)

__all__ = [
    "ShotlineTask",
    "chunks",
    "enqueue_gate",
    "enqueue_generate",
    "enqueue_publish",
    "model_key",
    "models_for_queue",
    "plan_batches",
    "send",
    "sweep_stalled",
]

S = ShotState


class ShotlineTask(Task):  # type: ignore[misc]
    """Base of every shotline task: late acks, and retries of transient errors.

    ``max_retries`` and ``retry_backoff_max`` come from the settings the task runs with (the
    app's in a worker): Celery reads ``max_retries`` at each retry and ``retry_backoff_max``
    once, when the task is registered. In-process (eager), a retry runs again at once.
    """

    autoretry_for = transient_errors()
    # No bucket, access denied, bad credentials: retrying cannot help; the task fails and
    # says why (``shotline doctor`` names the fix).
    dont_autoretry_for = (PermanentStorageError,)
    retry_backoff = 1  # seconds before the first retry, doubled each time, up to the max
    retry_jitter = True
    acks_late = True

    @property
    def settings(self) -> Settings:
        return task_settings(self.app)

    @property
    def context(self) -> WorkerContext:
        return context_for(self.settings)

    @property
    def max_retries(self) -> int:  # type: ignore[override]
        return self.settings.task_max_retries

    @property
    def retry_backoff_max(self) -> int:  # type: ignore[override]
        return self.settings.task_retry_backoff_max_s


def _ids(shot_ids: list[int] | int) -> list[int]:
    return [shot_ids] if isinstance(shot_ids, int) else shot_ids


# --- the tasks ----------------------------------------------------------------------------


@app.task(name=TASK_GENERATE, base=ShotlineTask, bind=True)
def generate_batch(
    self: ShotlineTask, shot_ids: list[int], batch_id: str | None = None
) -> dict[str, int]:
    ctx = self.context
    # Only a first delivery or a redelivery (lost worker) counts as an attempt, not a retry.
    first = not self.request.retries
    res = generate_shots(ctx, shot_ids, batch_id=batch_id, first_delivery=first)
    enqueue_gate(res.to_gate, ctx.settings)  # not gated on this host: the cpu queue's gate
    enqueue_generate(res.retry, ctx.settings, single=True, countdown=1.0)
    return res.summary()


@app.task(name=TASK_GATE, base=ShotlineTask, bind=True)
def gate_shot(self: ShotlineTask, shot_ids: list[int] | int) -> dict[str, int]:
    return gate_shots(self.context, _ids(shot_ids)).summary()


@app.task(name=TASK_PUBLISH, base=ShotlineTask, bind=True)
def publish_shot(self: ShotlineTask, shot_ids: list[int] | int) -> dict[str, int]:
    return publish(self.context, _ids(shot_ids)).summary()


@app.task(name=TASK_SWEEP, base=ShotlineTask, bind=True)
def sweep_stalled_shots(self: ShotlineTask) -> dict[str, int]:
    return sweep_stalled(self.settings)


# --- batching -----------------------------------------------------------------------------


def chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    size = max(1, size)
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


def message_size(settings: Settings) -> int:
    """Shots per generate message: one GPU batch, or ``gpu_batches_per_task`` of them when
    the gate runs on the GPU host (so finalizing one overlaps generating the next)."""
    per = settings.gpu_batches_per_task if settings.gate_on == "gpu" else 1
    return max(1, settings.batch_size) * per


def plan_batches(settings: Settings, shot_ids: Iterable[int]) -> list[tuple[str, list[int]]]:
    """(model key, ids) messages of at most ``message_size`` shots sharing a batch key."""
    with context_for(settings).sessions.begin() as s:
        groups = progress.batch_groups(s, list(shot_ids))
    return [
        (model_key(str(bkey[0])), batch)
        for bkey, ids in groups
        for batch in chunks(ids, message_size(settings))
    ]


# --- enqueueing ---------------------------------------------------------------------------


def send(
    settings: Settings,
    task: Task | str,
    args: list[Any],
    queue: str,
    kwargs: dict[str, Any] | None = None,
    countdown: float | None = None,
) -> None:
    """Send one task (or a registered task's name) to ``settings.broker_url``; in-process
    when embedded."""
    if isinstance(task, str) and task not in app.tasks:
        app.loader.import_default_modules()  # a name from another task module (ingest)
    obj = app.tasks[task] if isinstance(task, str) else task
    submit(settings, obj, args, queue, kwargs=kwargs, countdown=countdown)


def enqueue_batch(settings: Settings, key: str, batch: list[int], countdown: float = 0) -> None:
    """One generate message for ``batch`` (planned by ``plan_batches``) on ``gpu.<key>``."""
    submit(
        settings,
        generate_batch,
        [batch],
        gpu_queue(key),
        kwargs={"batch_id": uuid.uuid4().hex},
        countdown=countdown,
    )


def enqueue_generate(
    shot_ids: Sequence[int], settings: Settings, *, single: bool = False, countdown: float = 0
) -> int:
    """Send generate batches to their ``gpu.<model-key>`` queues; returns the message count.

    ``single`` sends one shot per message: shots handed back after a failed batch are retried
    alone, so one poison shot cannot sink its neighbours again.
    """
    if not shot_ids:
        return 0
    with context_for(settings).sessions.begin() as s:
        progress.mark_enqueued(s, list(shot_ids))  # before sending: a lost send is swept
    sent = 0
    for key, batch in plan_batches(settings, shot_ids):
        for part in chunks(batch, 1) if single else [batch]:
            enqueue_batch(settings, key, part, countdown)
            sent += 1
    return sent


def enqueue_gate(shot_ids: Sequence[int], settings: Settings) -> int:
    """Gate messages of at most ``cpu_batch_size`` shots on the ``cpu`` queue."""
    parts = list(chunks(shot_ids, settings.cpu_batch_size))
    for part in parts:
        submit(settings, gate_shot, [part], QUEUE_CPU)
    return len(parts)


def enqueue_publish(shot_ids: list[int], settings: Settings) -> None:
    """Publish approved shots: on the ``cpu`` queue, or in-process when embedded."""
    for part in chunks(shot_ids, settings.cpu_batch_size):
        submit(settings, publish_shot, [part], QUEUE_CPU)


def sweep_stalled(
    settings: Settings, shot_ids: Sequence[int] | None = None, older_than_s: float | None = None
) -> dict[str, int]:
    """Re-enqueue shots that made no progress for ``older_than_s`` (a lost message, a broker
    restart that dropped its queues, retries exhausted during an outage). Steps are idempotent,
    so a shot that was merely slow is processed once anyway."""
    older = settings.stall_timeout_s if older_than_s is None else older_than_s
    now = utcnow()
    # A generating shot may be a long GPU batch that is still running: it only counts as
    # abandoned once Redis itself would have redelivered it (the visibility timeout).
    gen_older = max(older, settings.visibility_timeout_s)
    with context_for(settings).sessions.begin() as s:
        by_state = progress.take_stalled(
            s, now - timedelta(seconds=older), now - timedelta(seconds=gen_older), shot_ids
        )
    enqueue_generate(by_state.get(S.planned, []) + by_state.get(S.generating, []), settings)
    enqueue_gate(by_state.get(S.generated, []), settings)
    enqueue_publish(by_state.get(S.approved, []), settings)
    return {str(state): len(ids) for state, ids in by_state.items() if ids}
