"""Worker start-up: build the worker's Settings, serve metrics, load models before any task.

Models are loaded once per worker process, never per task: ``worker_process_init`` for
prefork children, ``worker_init`` for ``--pool solo`` (which runs tasks in the main process).
"""

from __future__ import annotations

import gc
import logging
from typing import Any

from celery.signals import worker_init, worker_process_init

from pipeline.settings import Settings
from tasks.celery_app import app
from tasks.context import context_for, reset_contexts
from tasks.metrics import start_worker_metrics
from tasks.queues import GPU_PREFIX, QUEUE_CPU, models_for_queue

log = logging.getLogger(__name__)


def _consumed_queues() -> list[str]:
    try:
        return list(app.amqp.queues.consume_from or app.amqp.queues)
    except Exception:  # pragma: no cover - introspection only guides the warm-up
        return []


def warm_up(settings: Settings, queues: list[str] | None = None) -> None:
    """Load this worker's models now, so the first task does not pay for them."""
    reset_contexts()  # never reuse a DB pool or model inherited across fork
    ctx = context_for(settings)
    queues = _consumed_queues() if queues is None else queues
    for queue in queues:
        if queue.startswith(GPU_PREFIX):
            for model_id in models_for_queue(settings, queue):
                log.info("loading model %s for %s", model_id, queue)
                ctx.generator(model_id)
            if settings.gate_on == "gpu":
                log.info("loading the gate (CLIP + watermark) next to the model")
                ctx.gate()
        elif queue == QUEUE_CPU and settings.gate_on == "cpu":
            # Gating on the GPU host, the cpu queue gates only fallbacks: it loads CLIP on
            # the first one rather than holding a copy in every prefork child.
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
    warm_up(app.settings)  # the parent's, built in worker_init and inherited across fork


@worker_init.connect
def _init_worker(sender: Any = None, **_: Any) -> None:
    # The worker's entry point: its settings are its environment, read now, once.
    settings = Settings()
    app.configure(settings)
    # The main process serves /metrics (before prefork children exist) when a port is set.
    start_worker_metrics(settings)
    # The solo pool runs tasks in this very process and never sends worker_process_init.
    pool = str(getattr(sender, "pool_cls", "")).lower()
    if "solo" in pool:
        warm_up(settings)
