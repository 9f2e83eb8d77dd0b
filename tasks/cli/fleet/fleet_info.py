"""What the fleet looks like right now: which workers consume which queue (Celery's remote
``inspect``), and how many messages wait in each queue (the broker's own counts).

Used by ``shotline status`` (depths and workers), ``shotline doctor`` (queues without a
consumer) and the up-front warnings of ``run`` and ``lora train``. Everything here asks the
broker named by the settings passed in (not the app's own broker) and never raises for an
unreachable broker: the answer then says so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kombu import Connection

    from pipeline.settings import Settings


# kombu's Redis transport keeps one set per exchange binding: "_kombu.binding.<queue>" for
# the direct exchange each queue is declared on, so declared queues can be listed.
_BINDING_PREFIX = "_kombu.binding."


@dataclass
class FleetInfo:
    """Workers by name with the queues they consume, and messages waiting per queue."""

    reachable: bool
    error: str | None = None
    workers: dict[str, list[str]] = field(default_factory=dict)
    depths: dict[str, int] = field(default_factory=dict)

    def consumers(self, queue: str) -> list[str]:
        return sorted(w for w, queues in self.workers.items() if queue in queues)

    def queues(self) -> list[str]:
        seen = set(self.depths) | {q for qs in self.workers.values() for q in qs}
        return sorted(seen)

    def to_json(self) -> dict[str, Any]:
        return {
            "reachable": self.reachable,
            "error": self.error,
            "workers": {w: sorted(q) for w, q in sorted(self.workers.items())},
            "queues": {
                q: {"waiting": self.depths.get(q, 0), "consumers": self.consumers(q)}
                for q in self.queues()
            },
        }


def _connection(settings: Settings) -> Connection:
    # Fail fast: a status line must not hang on a broker that is down.
    from kombu import Connection

    return Connection(
        settings.broker_url,
        connect_timeout=3,
        transport_options={"socket_connect_timeout": 3, "socket_timeout": 5},
    )


def active_queues(settings: Settings, timeout_s: float = 1.0) -> dict[str, list[str]]:
    """Worker name -> queues it consumes, from the workers that answer within ``timeout_s``."""
    from celery import Celery

    from tasks.celery_app import celery_config

    # A throwaway app on *this* broker: remote control publishes through its app's producer
    # pool, so the module's app (configured for whatever this process started with) would
    # ask another broker, or none.
    probe = Celery("shotline-inspect", set_as_current=False)
    probe.conf.update(celery_config(settings))
    probe.conf.broker_connection_retry_on_startup = False
    probe.conf.broker_connection_max_retries = 1
    try:
        with _connection(settings) as conn:
            conn.ensure_connection(max_retries=1)
            inspector = probe.control.inspect(timeout=timeout_s, connection=conn)
            replies = inspector.active_queues() or {}
    finally:
        probe.close()
    return {
        worker: sorted({str(q.get("name")) for q in queues or [] if q.get("name")})
        for worker, queues in replies.items()
    }


def _declared_queues(conn: Connection) -> set[str]:
    """Queues the broker knows of (Redis only: kombu's binding sets); empty elsewhere."""
    from tasks.queues import GPU_PREFIX, QUEUE_CPU, QUEUE_INGEST, TRAIN_PREFIX

    client = getattr(conn.default_channel, "client", None)
    if client is None or not hasattr(client, "scan_iter"):
        return set()
    names = set()
    for raw in client.scan_iter(match=_BINDING_PREFIX + "*", count=500):
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        names.add(name.removeprefix(_BINDING_PREFIX))
    # On Redis a queue is the list named after it. A queue Celery created on the fly (the
    # gpu.<model> ones) need not have a binding key by the time we look, but its waiting
    # messages are in that list (kombu's priority lists carry a "\x06\x16" suffix).
    ours = (GPU_PREFIX, TRAIN_PREFIX)
    for prefix in ours:
        for raw in client.scan_iter(match=prefix + "*", count=500):
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            names.add(name.split("\x06\x16", 1)[0])
    return {n for n in names if n in (QUEUE_CPU, QUEUE_INGEST) or n.startswith(ours)}


def queue_depths(conn: Connection, queues: Iterable[str]) -> dict[str, int]:
    """Messages waiting (not yet delivered) per queue; a queue the broker lacks has 0."""
    from amqp.exceptions import ChannelError as AmqpChannelError
    from kombu.exceptions import ChannelError

    depths: dict[str, int] = {}
    channel = conn.default_channel
    for queue in sorted(set(queues)):
        try:
            ok = channel.queue_declare(queue=queue, passive=True)
        except (ChannelError, AmqpChannelError):
            depths[queue] = 0  # never declared, or emptied and gone (Redis deletes empty lists)
            channel = conn.default_channel  # AMQP closes a channel after a failed passive declare
            continue
        depths[queue] = int(getattr(ok, "message_count", 0) or 0)
    return depths


def fleet_info(
    settings: Settings, extra_queues: Iterable[str] = (), timeout_s: float = 1.0
) -> FleetInfo:
    """Workers and queue depths on ``settings.broker_url`` (never raises for a dead broker)."""
    from tasks.queues import QUEUE_CPU, QUEUE_INGEST

    if settings.embedded:
        return FleetInfo(reachable=False, error="no broker configured (embedded mode)")
    try:
        workers = active_queues(settings, timeout_s)
        with _connection(settings) as conn:
            conn.ensure_connection(max_retries=1)
            wanted = {QUEUE_CPU, QUEUE_INGEST, *extra_queues, *_declared_queues(conn)}
            wanted |= {q for qs in workers.values() for q in qs}
            depths = queue_depths(conn, wanted)
    except Exception as exc:  # any broker failure is an answer here, not a crash
        return FleetInfo(reachable=False, error=" ".join(f"{type(exc).__name__}: {exc}".split()))
    return FleetInfo(reachable=True, workers=workers, depths=depths)


def missing_consumers(settings: Settings, queues: Iterable[str]) -> list[str]:
    """The queues among ``queues`` that no worker consumes now (empty when embedded or when
    the broker cannot be asked: that is reported elsewhere, not guessed)."""
    wanted = sorted(set(queues))
    if settings.embedded or not wanted:
        return []
    workers: dict[str, list[str]] = {}
    with contextlib.suppress(Exception):
        workers = active_queues(settings)
        served = {q for qs in workers.values() for q in qs}
        return [q for q in wanted if q not in served]
    return []


def start_hint(queue: str) -> str:
    """The command that starts a consumer for ``queue``."""
    from tasks.queues import GPU_PREFIX, TRAIN_PREFIX

    if queue.startswith(GPU_PREFIX):
        return f"shotline worker --gpu {queue.removeprefix(GPU_PREFIX)}"
    if queue.startswith(TRAIN_PREFIX):
        return f"shotline worker --train {queue.removeprefix(TRAIN_PREFIX)}"
    return "shotline worker --cpu"
