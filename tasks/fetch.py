"""``shotline.fetch_sources``: the thin Celery task (``cpu`` queue) over
``tasks.sources.fetching``, and the helpers that send it."""

from __future__ import annotations

import time
from typing import Any

from catalog.packshots.loading import count_pending, pending_sources_of
from catalog.packshots.sources import sources_to_fetch
from pipeline.settings import Settings
from tasks.celery_app import app, submit
from tasks.context import context_for
from tasks.dispatch import ShotlineTask, chunks
from tasks.queues import QUEUE_CPU, TASK_FETCH
from tasks.sources.fetching import FetchReport, fetch_sources, source_key

__all__ = ["FetchReport", "enqueue_fetch", "fetch_for_brand", "fetch_sources", "source_key"]


@app.task(name=TASK_FETCH, base=ShotlineTask, bind=True)
def fetch_sources_task(self: ShotlineTask, source_ids: list[int]) -> dict[str, Any]:
    return fetch_sources(self.context, source_ids).to_json()


def enqueue_fetch(source_ids: list[int], settings: Settings) -> int:
    """Fetch messages of at most ``cpu_batch_size`` images on the ``cpu`` queue."""
    parts = list(chunks(source_ids, settings.cpu_batch_size))
    for part in parts:
        submit(settings, fetch_sources_task, [part], QUEUE_CPU)
    return len(parts)


def fetch_for_brand(
    settings: Settings,
    brand_id: int | None,
    *,
    retry_failed: bool = False,
    refresh: bool = False,
) -> list[int]:
    """Enqueue the brand's images still to fetch (failed ones and a re-check of fetched
    ones on request); returns their ids."""
    with context_for(settings).sessions.begin() as s:
        ids = sources_to_fetch(
            s, brand_id=brand_id, include_failed=retry_failed, include_fetched=refresh
        )
    enqueue_fetch(ids, settings)
    return ids


def prefetch_for_shots(settings: Settings, shot_ids: list[int], wait_s: float = 300.0) -> int:
    """Fetch the still-pending source images of these (packshot) shots before they reach a
    GPU: in-process when embedded, else on the ``cpu`` queue, waiting up to ``wait_s`` for
    them to settle. Whatever is still pending then, the GPU step fetches itself. Returns
    how many images were sent."""
    ctx = context_for(settings)
    with ctx.sessions.begin() as s:
        ids = pending_sources_of(s, shot_ids)
    if not ids:
        return 0
    enqueue_fetch(ids, settings)
    if not settings.embedded:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            with ctx.sessions.begin() as s:
                left = count_pending(s, ids)
            if not left:
                break
            time.sleep(0.5)
    return len(ids)
