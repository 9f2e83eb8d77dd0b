"""The Celery app: Redis broker, JSON only, late acks, one model resident per worker.

Queue and task names live in ``tasks.queues``; the tasks in ``tasks.dispatch`` (the line) and
``tasks.ingest`` (scheduled ingestion); the worker signals and warm-up in ``tasks.signals``.

Running a fleet::

    # one process per GPU: CUDA does not survive fork, so GPU workers use the solo pool
    CUDA_VISIBLE_DEVICES=0 celery -A tasks.celery_app worker -Q gpu.tiny --pool solo -n gpu0@%h
    CUDA_VISIBLE_DEVICES=1 celery -A tasks.celery_app worker -Q gpu.tiny --pool solo -n gpu1@%h
    # CPU work: prefork is fine (no CUDA); each child loads CLIP once
    celery -A tasks.celery_app worker -Q cpu,ingest --pool prefork -c 2 -n cpu@%h
    celery -A tasks.celery_app beat   # scheduled ingestion

The module-level ``app`` is created unconfigured: its configuration comes from one
``Settings``, the ones passed to ``app.configure(settings)`` (the CLI, tests), else, in a
``celery -A tasks.celery_app ...`` process, ones built from the ``SHOTLINE_*`` environment the
first time Celery reads its configuration.

With no broker (``settings.embedded``) ``submit`` runs a task in this process through Celery's
eager ``Task.apply``: the same task bodies, retries included, with no worker.
"""

from __future__ import annotations

from collections import deque
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from celery import Celery, states
from kombu import Connection, Queue

from pipeline.settings import Settings
from tasks.queues import (
    QUEUE_CPU,
    QUEUE_INGEST,
    ROUTES,
    TASK_FEEDS,
    TASK_GATE,
    TASK_GENERATE,
    TASK_IMPORT,
    TASK_INGEST,
    TASK_PUBLISH,
    TASK_SWEEP,
    gpu_queue,
)

# Importing these registers the tasks and connects the worker signals.
TASK_MODULES = [
    "tasks.dispatch",
    "tasks.ingest",
    "tasks.fetch",
    "tasks.regate",
    "tasks.signals",
    "tasks.training.task",
    "tasks.delivery.feeds",
]

__all__ = [
    "QUEUE_CPU",
    "QUEUE_INGEST",
    "TASK_GATE",
    "TASK_GENERATE",
    "TASK_IMPORT",
    "TASK_INGEST",
    "TASK_PUBLISH",
    "TASK_SWEEP",
    "ShotlineCelery",
    "app",
    "celery_config",
    "gpu_queue",
    "submit",
    "task_settings",
]


def ingest_kwargs(settings: Settings) -> dict[str, Any]:
    """What beat's ingest tick carries: its own sources and brand, when it has them (else the
    worker's settings apply, as before)."""
    out: dict[str, Any] = {}
    if settings.ingest_sources:
        out["sources"] = list(settings.ingest_sources)
    if settings.ingest_brand:
        out["brand"] = settings.ingest_brand
    return out


def feeds_schedule(settings: Settings) -> dict[str, Any]:
    """Beat's feed refresh (``tasks.delivery.feeds``), unless ``feed_interval_s`` is 0."""
    every = float(settings.feed_interval_s)
    if every <= 0:
        return {}
    return {
        "refresh-store-feeds": {
            "task": TASK_FEEDS,
            "schedule": every,
            "options": {"queue": QUEUE_CPU, "expires": every},
        }
    }


def celery_config(settings: Settings) -> dict[str, Any]:
    """Everything the app needs from settings; also used to point a client at another broker."""
    return {
        "broker_url": settings.broker_url or "memory://",
        "result_backend": settings.result_backend,
        # Progress is followed from the database; results would only fill Redis.
        "task_ignore_result": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        # A task is acknowledged only once it finished: a killed worker's batch is redelivered.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Redis redelivers unacked messages after this; it must exceed the longest GPU batch.
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout_s,
            # Sweep for abandoned (unacked) messages often enough for the timeout to matter.
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout_s // 2)),
            "unacked_restore_throttle": 1,
        },
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        # Enqueueing the next step rides out a broker restart instead of dropping the shot.
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 30,
            "interval_start": 0.2,
            "interval_step": 0.5,
            "interval_max": 2.0,
        },
        # task_always_eager stays off: whether a call runs here is decided by the Settings it is
        # made with, and one process (tests, benchmarks) may send to a fleet and run embedded.
        # Eager propagation stays off too: with it Celery raises a task's Retry instead of
        # running the retry; ``submit`` raises the error once the retries are spent.
        "task_eager_propagates": False,
        "task_default_queue": QUEUE_CPU,
        "task_queues": (Queue(QUEUE_CPU), Queue(QUEUE_INGEST)),
        "task_create_missing_queues": True,  # gpu.<model-key> queues appear as models do
        "task_routes": dict(ROUTES),
        "beat_schedule": {
            **feeds_schedule(settings),
            "ingest-due-catalogs": {
                "task": TASK_INGEST,
                "schedule": float(settings.ingest_interval_s),
                # The ingestion settings travel with the tick: they are set where beat runs
                # (as documented), and the ingest worker may have none of its own.
                "kwargs": ingest_kwargs(settings),
                # A tick nobody picked up before the next one is redundant: drop it.
                "options": {"queue": QUEUE_INGEST, "expires": float(settings.ingest_interval_s)},
            },
            "sweep-stalled-shots": {
                "task": TASK_SWEEP,
                "schedule": float(settings.stall_timeout_s),
                "options": {"queue": QUEUE_CPU, "expires": float(settings.stall_timeout_s)},
            },
        },
        "worker_hijack_root_logger": False,
        "timezone": "UTC",
    }


class ShotlineCelery(Celery):
    """A Celery app configured from one ``Settings`` object, never at import."""

    def __init__(self) -> None:
        super().__init__("shotline", include=TASK_MODULES)
        self._settings: Settings | None = None
        self.on_configure.connect(self._load_settings, weak=False)

    def configure(self, settings: Settings) -> None:
        """Use ``settings`` from now on (the CLI and worker entry points call this first)."""
        self._settings = settings
        if self.configured:
            self.conf.update(celery_config(settings))

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            _ = self.conf  # a first read of the config builds them (see _load_settings)
        assert self._settings is not None
        return self._settings

    def _load_settings(self, sender: Any = None, **_: Any) -> None:
        # Celery reads its configuration lazily; whoever reads it first without having called
        # configure() is a `celery -A tasks.celery_app` process: its settings are its env.
        if self._settings is None:
            self._settings = Settings()
        self.config_from_object(celery_config(self._settings))


app = ShotlineCelery()


# --- submitting a task ----------------------------------------------------------------------


@dataclass
class _InlineRun:
    """Tasks run in this process, in order, one at a time, like a single worker would."""

    pending: deque[tuple[Settings, Any, list[Any], dict[str, Any]]] = field(default_factory=deque)
    current: Settings | None = None


_inline: ContextVar[_InlineRun | None] = ContextVar("shotline_inline_run", default=None)
_connections: dict[str, Connection] = {}


def task_settings(celery: ShotlineCelery) -> Settings:
    """The settings a task body runs with: the caller's when run in-process, else the app's."""
    run = _inline.get()
    if run is not None and run.current is not None:
        return run.current
    return celery.settings


def _run_inline(settings: Settings, task: Any, args: list[Any], kwargs: dict[str, Any]) -> None:
    run = _inline.get()
    if run is not None:
        # Sent from inside a task running here: queue it behind the running one, as a broker
        # would. A failed child never unwinds through its parent's retry, and the stack stays
        # flat however many shots are handed back.
        run.pending.append((settings, task, args, kwargs))
        return
    run = _InlineRun(deque([(settings, task, args, kwargs)]))
    token = _inline.set(run)
    try:
        while run.pending:
            run.current, task, args, kwargs = run.pending.popleft()
            # Celery's eager execution: the task's autoretry re-applies it at once (no
            # countdown) up to max_retries; the error that is left is raised here.
            result = task.apply(args, kwargs)
            if result.state in states.PROPAGATE_STATES:
                error = result.result
                raise error if isinstance(error, BaseException) else RuntimeError(str(error))
    finally:
        _inline.reset(token)


def submit(
    settings: Settings,
    task: Any,
    args: list[Any],
    queue: str,
    kwargs: dict[str, Any] | None = None,
    countdown: float | None = None,
) -> None:
    """Send ``task`` to ``settings.broker_url`` (which may differ from the app's own broker),
    or run it in this process when ``settings`` name no broker (the embedded default)."""
    if settings.embedded:
        _run_inline(settings, task, args, kwargs or {})
        return
    options: dict[str, Any] = {"queue": queue}
    if countdown:
        options["countdown"] = countdown
    url = settings.broker_url
    if url and url != task.app.conf.broker_url:
        conn = _connections.get(url)
        if conn is None:
            conn = _connections[url] = task.app.connection_for_write(url)
        options["connection"] = conn
    task.apply_async(args=args, kwargs=kwargs or {}, **options)
