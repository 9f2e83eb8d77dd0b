"""The Celery app: Redis broker, JSON only, late acks, one model resident per worker.

Queues:

- ``gpu.<model-key>`` (e.g. ``gpu.tiny``): ``shotline.generate_batch``. One queue per base
  model so a worker keeps one model loaded and never swaps it between tasks.
- ``cpu``: ``shotline.gate_shot`` (CLIP + watermark + provenance) and ``shotline.publish_shot``,
  so CPU work never stalls a GPU.
- ``ingest``: ``shotline.import_catalog`` and the beat-driven ``shotline.ingest_due_catalogs``.

Running a fleet::

    # one process per GPU: CUDA does not survive fork, so GPU workers use the solo pool
    CUDA_VISIBLE_DEVICES=0 celery -A tasks.celery_app worker -Q gpu.tiny --pool solo -n gpu0@%h
    CUDA_VISIBLE_DEVICES=1 celery -A tasks.celery_app worker -Q gpu.tiny --pool solo -n gpu1@%h
    # CPU work: prefork is fine (no CUDA); each child loads CLIP once
    celery -A tasks.celery_app worker -Q cpu,ingest --pool prefork -c 2 -n cpu@%h
    celery -A tasks.celery_app beat   # scheduled ingestion

Models are loaded once per worker process, never per task: ``worker_process_init`` for prefork
children, ``worker_init`` for ``--pool solo`` (which runs tasks in the main process).
With no ``SHOTLINE_BROKER_URL`` the app is eager and ``shotline run`` works in-process.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_process_init
from kombu import Queue

from pipeline.settings import Settings, get_settings

log = logging.getLogger(__name__)

TASK_GENERATE = "shotline.generate_batch"
TASK_GATE = "shotline.gate_shot"
TASK_PUBLISH = "shotline.publish_shot"
TASK_IMPORT = "shotline.import_catalog"
TASK_INGEST = "shotline.ingest_due_catalogs"
TASK_SWEEP = "shotline.sweep_stalled"

QUEUE_CPU = "cpu"
QUEUE_INGEST = "ingest"


def gpu_queue(model_key: str) -> str:
    return f"gpu.{model_key}"


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
        "task_always_eager": settings.embedded,
        "task_eager_propagates": True,
        "task_default_queue": QUEUE_CPU,
        "task_queues": (Queue(QUEUE_CPU), Queue(QUEUE_INGEST)),
        "task_create_missing_queues": True,  # gpu.<model-key> queues appear as models do
        "task_routes": {
            TASK_GATE: {"queue": QUEUE_CPU},
            TASK_PUBLISH: {"queue": QUEUE_CPU},
            TASK_SWEEP: {"queue": QUEUE_CPU},
            TASK_IMPORT: {"queue": QUEUE_INGEST},
            TASK_INGEST: {"queue": QUEUE_INGEST},
            # generate_batch is sent with queue=gpu.<model-key> by tasks.dispatch.
        },
        "beat_schedule": {
            "ingest-due-catalogs": {
                "task": TASK_INGEST,
                "schedule": float(settings.ingest_interval_s),
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


def make_app(settings: Settings) -> Celery:
    celery = Celery("shotline", include=["tasks.worker_tasks"])
    celery.conf.update(celery_config(settings))
    return celery


app = make_app(get_settings())


def _consumed_queues() -> list[str]:
    try:
        return list(app.amqp.queues.consume_from or app.amqp.queues)
    except Exception:  # pragma: no cover - introspection only guides the warm-up
        return []


def warm_up(queues: list[str] | None = None) -> None:
    """Load this worker's models now, so the first task does not pay for them."""
    from tasks.context import context_for, reset_contexts
    from tasks.dispatch import models_for_queue

    reset_contexts()  # never reuse a DB pool or model inherited across fork
    ctx = context_for()
    queues = _consumed_queues() if queues is None else queues
    for queue in queues:
        if queue.startswith("gpu."):
            for model_id in models_for_queue(ctx.settings, queue):
                log.info("loading model %s for %s", model_id, queue)
                ctx.generator(model_id)
        elif queue == QUEUE_CPU:
            log.info("loading the gate (CLIP + watermark)")
            ctx.gate()
    # Open the pool's first DB connection and build the blob store client now, not inside
    # the first task.
    with ctx.engine.connect():
        pass
    _ = ctx.store
    # Models and libraries are now ~0.5M long-lived objects; every full collection would walk
    # them again (~1 ms of CPU per shot at control-plane rates). Freeze them out of its sight.
    gc.collect()
    gc.freeze()
    log.info("shotline worker warm: queues %s", ",".join(queues))


@worker_process_init.connect
def _init_prefork_child(**_: Any) -> None:
    warm_up()


@worker_init.connect
def _init_worker(sender: Any = None, **_: Any) -> None:
    from tasks.metrics import start_worker_metrics

    # The main process serves /metrics (before prefork children exist) when a port is set.
    start_worker_metrics(get_settings())
    # The solo pool runs tasks in this very process and never sends worker_process_init.
    pool = str(getattr(sender, "pool_cls", "")).lower()
    if "solo" in pool:
        warm_up()
