"""Enqueue helpers: group shots into GPU batches, route them, re-enqueue stalled ones.

With no broker configured (the embedded default) the same calls run the steps in-process.
Messages carry only ids and JSON.
"""

from __future__ import annotations

import re
import uuid
import warnings
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from catalog.models import Shot, ShotState, utcnow
from catalog.shots import shot_params
from pipeline.brand.config import BrandConfigError
from pipeline.brand.loader import load_brand
from pipeline.settings import Settings
from tasks import celery_app as ca
from tasks.context import context_for

S = ShotState

_connections: dict[str, Any] = {}


def model_key(model_id: str) -> str:
    """Short, queue-safe name of a model id: ``tiny``, ``runwayml/sd-v1-5`` -> ``sd-v1-5``."""
    leaf = re.split(r"[\\/]", model_id.rstrip("/\\"))[-1] or model_id
    leaf = re.sub(r"\.(safetensors|ckpt|bin|pt)$", "", leaf, flags=re.I)
    key = re.sub(r"[^a-z0-9_-]+", "-", leaf.lower()).strip("-")
    return key[:48] or "default"


def models_for_queue(settings: Settings, queue: str) -> list[str]:
    """Model ids a ``gpu.<key>`` worker should preload: SHOTLINE_MODEL, else brand base models."""
    key = queue.removeprefix("gpu.")
    if settings.model:
        return [settings.model] if model_key(settings.model) == key else []
    found: list[str] = []
    for path in sorted(settings.brands_dir.glob("*.y*ml")):
        try:
            base = load_brand(path).base_model
        except BrandConfigError:
            continue
        if model_key(base) == key and base not in found:
            found.append(base)
    return found


def chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    size = max(1, size)
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


def send(
    settings: Settings,
    name: str,
    args: list[Any],
    queue: str,
    kwargs: dict[str, Any] | None = None,
    countdown: float | None = None,
) -> None:
    """Send one task to ``settings.broker_url`` (which may differ from the app's own broker)."""
    options: dict[str, Any] = {"queue": queue}
    if countdown:
        options["countdown"] = countdown
    url = settings.broker_url
    if url and url != ca.app.conf.broker_url:
        conn = _connections.get(url)
        if conn is None:
            conn = _connections[url] = ca.app.connection_for_write(url)
        options["connection"] = conn
    with warnings.catch_warnings():
        # An eager app (no broker in this process's env) still sends when told a broker.
        warnings.simplefilter("ignore")
        ca.app.send_task(name, args=args, kwargs=kwargs or {}, **options)


def plan_batches(settings: Settings, shot_ids: Iterable[int]) -> list[tuple[str, list[int]]]:
    """(model key, ids) batches of at most ``batch_size`` shots sharing a batch key."""
    ctx = context_for(settings)
    groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    with ctx.sessions.begin() as s:
        for shot in s.scalars(select(Shot).where(Shot.id.in_(list(shot_ids))).order_by(Shot.id)):
            groups[shot_params(shot).batch_key()].append(shot.id)
    return [
        (model_key(str(bkey[0])), batch)
        for bkey, ids in groups.items()
        for batch in chunks(ids, settings.batch_size)
    ]


def enqueue_generate(
    shot_ids: Sequence[int], settings: Settings, *, single: bool = False, countdown: float = 0
) -> int:
    """Send generate batches to their ``gpu.<model-key>`` queues; returns the message count.

    ``single`` sends one shot per message: shots handed back after a failed batch are retried
    alone, so one poison shot cannot sink its neighbours again.
    """
    if not shot_ids:
        return 0
    if settings.embedded:
        from tasks import steps

        ctx = context_for(settings)
        for _, batch in plan_batches(settings, shot_ids):
            res = steps.generate(ctx, batch)
            enqueue_gate(res.done, settings)
            for sid in res.retry:
                enqueue_generate([sid], settings, single=True)
        return 0
    sent = 0
    for key, batch in plan_batches(settings, shot_ids):
        for part in chunks(batch, 1) if single else [batch]:
            send(
                settings,
                ca.TASK_GENERATE,
                [part],
                ca.gpu_queue(key),
                kwargs={"batch_id": uuid.uuid4().hex},
                countdown=countdown,
            )
            sent += 1
    return sent


def enqueue_gate(shot_ids: Sequence[int], settings: Settings) -> int:
    if not shot_ids:
        return 0
    if settings.embedded:
        from tasks import steps

        for part in chunks(shot_ids, settings.cpu_batch_size):
            steps.gate(context_for(settings), part)
        return 0
    for part in chunks(shot_ids, settings.cpu_batch_size):
        send(settings, ca.TASK_GATE, [part], ca.QUEUE_CPU)
    return -(-len(shot_ids) // max(1, settings.cpu_batch_size))


def enqueue_publish(shot_ids: list[int], settings: Settings) -> None:
    """Publish approved shots: in-process when embedded, else on the ``cpu`` queue."""
    if not shot_ids:
        return
    if settings.embedded:
        from tasks import steps

        for part in chunks(shot_ids, settings.cpu_batch_size):
            steps.publish(context_for(settings), part)
        return
    for part in chunks(shot_ids, settings.cpu_batch_size):
        send(settings, ca.TASK_PUBLISH, [part], ca.QUEUE_CPU)


def sweep_stalled(
    settings: Settings, shot_ids: Sequence[int] | None = None, older_than_s: float | None = None
) -> dict[str, int]:
    """Re-enqueue shots that made no progress for ``older_than_s`` (a lost message, a broker
    restart that dropped its queues, retries exhausted during an outage). Steps are idempotent,
    so a shot that was merely slow is processed once anyway."""
    older = settings.stall_timeout_s if older_than_s is None else older_than_s
    now = utcnow()
    cutoff = now - timedelta(seconds=older)
    # A generating shot may be a long GPU batch that is still running: it only counts as
    # abandoned once Redis itself would have redelivered it (the visibility timeout).
    gen_cutoff = now - timedelta(seconds=max(older, settings.visibility_timeout_s))
    ctx = context_for(settings)
    wanted = (S.planned, S.generated, S.approved)
    with ctx.sessions.begin() as s:
        stmt = select(Shot.id, Shot.state).where(
            ((Shot.state.in_([str(w) for w in wanted])) & (Shot.updated_at < cutoff))
            | ((Shot.state == S.generating) & (Shot.updated_at < gen_cutoff))
        )
        if shot_ids is not None:
            stmt = stmt.where(Shot.id.in_(list(shot_ids)))
        else:
            # Fleet-wide: a planned shot nobody ever enqueued is not stalled, it is waiting for
            # `shotline run`; only shots handed back after an attempt count.
            stmt = stmt.where((Shot.state != S.planned) | (Shot.attempts > 0))
        rows = s.execute(stmt.order_by(Shot.id)).all()
        if rows:
            # Touch them so a second sweep does not re-send the same shots straight away.
            for shot in s.scalars(select(Shot).where(Shot.id.in_([r[0] for r in rows]))):
                shot.updated_at = utcnow()
    by_state: dict[str, list[int]] = defaultdict(list)
    for sid, state in rows:
        by_state[state].append(sid)
    enqueue_generate(by_state[S.planned] + by_state[S.generating], settings)
    enqueue_gate(by_state[S.generated], settings)
    enqueue_publish(by_state[S.approved], settings)
    return {str(state): len(ids) for state, ids in by_state.items() if ids}
