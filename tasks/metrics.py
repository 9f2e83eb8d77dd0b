"""Prometheus metrics for the workers: what was generated, gated, rejected and published.

Import-light on purpose (only ``prometheus_client``): tasks call the ``record_*`` functions
whether they run in a worker or in-process (embedded mode), and recording never raises.

Process models:

- ``--pool solo`` / ``--pool threads`` (the GPU workers): one process, the default registry.
  ``start_metrics_server(port)`` serves it on a background thread.
- ``--pool prefork`` (the CPU workers): every child has its own counters, so set
  ``PROMETHEUS_MULTIPROC_DIR`` to an empty, writable folder *before* the worker starts
  (prometheus_client reads it at import time). Values then live in mmap files in that
  folder and whichever process serves ``/metrics`` aggregates all of them. Call
  ``start_metrics_server`` from the main process (Celery's ``worker_init`` signal); a child
  that finds the port already bound quietly leaves serving to the process that holds it.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)

if TYPE_CHECKING:
    from pipeline.settings import Settings

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

IMAGES_GENERATED = Counter(
    "shotline_images_generated", "Raw images produced by the generator (successful shots)."
)
IMAGES_GATED = Counter(
    "shotline_images_gated", "Images that went through the gate, whatever the decision."
)
IMAGES_REJECTED = Counter(
    "shotline_images_rejected",
    "Images the gate rejected, by reason (one image may count under several reasons).",
    ["reason"],
)
IMAGES_PUBLISHED = Counter("shotline_images_published", "Final images written to the bucket.")
# GPU batches take from under a second (tiny preset) to many minutes (SDXL, 50 steps, batch 8).
BATCH_SECONDS = Histogram(
    "shotline_batch_seconds",
    "Wall-clock seconds per generation batch.",
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600),
)

# Reasons come from the gate as free text ("competitor: Nike 0.41 >= 0.30"). A label value
# per distinct text would grow without bound, so only the leading word is kept.
_REASON_HEAD = re.compile(r"[A-Za-z0-9_.-]+")
_MAX_REASON_LEN = 40

_lock = threading.Lock()
_servers: dict[int, WSGIServer] = {}


def reason_label(reason: str) -> str:
    """The bounded label value for a rejection reason: its first word, lower-cased."""
    match = _REASON_HEAD.search(reason or "")
    if not match:
        return "unspecified"
    head = match.group(0).strip(".-").lower()
    return head[:_MAX_REASON_LEN] or "unspecified"


def record_generated(n: int = 1) -> None:
    """Count ``n`` raw images generated."""
    if n > 0:
        IMAGES_GENERATED.inc(n)


def record_gated(decision: str, reasons: Iterable[str] = ()) -> None:
    """Count one gate decision; a rejection also counts once under each distinct reason."""
    IMAGES_GATED.inc()
    if decision != "rejected":
        return
    labels = {reason_label(r) for r in reasons} or {"unspecified"}
    for label in sorted(labels):
        IMAGES_REJECTED.labels(reason=label).inc()


def record_published(n: int = 1) -> None:
    """Count ``n`` images published to the bucket."""
    if n > 0:
        IMAGES_PUBLISHED.inc(n)


def observe_batch(seconds: float) -> None:
    """Record the wall-clock duration of one generation batch."""
    if seconds >= 0:
        BATCH_SECONDS.observe(seconds)


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def _registry() -> CollectorRegistry:
    if not multiprocess_enabled():
        return REGISTRY
    # Imported here: the multiprocess module is only needed by the serving process.
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def metrics_text() -> bytes:
    """The current exposition text, as the HTTP endpoint serves it."""
    return generate_latest(_registry())


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> bool:
    """Serve ``/metrics`` on ``port`` from a daemon thread; True if this call started it.

    Idempotent within a process. When the port is already bound and multiprocess mode is on,
    a sibling process is serving the shared values, so this returns False instead of raising.
    """
    with _lock:
        if port in _servers:
            return False
        try:
            server, _thread = start_http_server(port, addr=addr, registry=_registry())
        except OSError as exc:
            if multiprocess_enabled():
                log.info("metrics port %s already served by a sibling process (%s)", port, exc)
                return False
            raise
        _servers[port] = server
    log.info("serving Prometheus metrics on %s:%s/metrics", addr, port)
    return True


def start_worker_metrics(settings: Settings) -> bool:
    """Start the endpoint if ``settings.metrics_port`` is set. Call it from Celery's
    ``worker_init`` (the main process, before prefork children exist)."""
    if not settings.metrics_port:
        return False
    return start_metrics_server(settings.metrics_port)


def stop_metrics_server(port: int) -> None:
    """Stop a server started by ``start_metrics_server`` (tests, clean shutdown)."""
    with _lock:
        server = _servers.pop(port, None)
    if server is not None:
        server.shutdown()
        server.server_close()
