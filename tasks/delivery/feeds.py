"""Beat's feed refresh: the store feeds of every channel that names a ``feed``, rewritten in
the blob store after new publications, recalls or imports changed what they list.

A channel with ``feed: csv`` (a Shopify product CSV) or ``feed: tsv|xml`` (a Merchant Center
feed) is written to ``feeds/<brand>/<channel>.<ext>``, the stable key ``shotline export
--to-store`` uses, so Merchant Center (or a Shopify import job) can fetch it on a schedule.
Beside it, ``<key>.state.json`` records the brand's ``feed_fingerprint`` the file was written
at: a tick whose fingerprint matches writes nothing. Each file is streamed to a temp file
first (bounded memory whatever the catalog's size) and put whole.

The task, ``shotline.refresh_feeds``, runs on the ``cpu`` queue every
``SHOTLINE_FEED_INTERVAL_S`` (0: beat does not schedule it).
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from catalog.brands import all_brands
from catalog.delivery.exports import feed_fingerprint
from catalog.delivery.feed_files import write_export
from catalog.models import utcnow
from pipeline.brand.config import BrandConfig, BrandConfigError, ChannelSpec
from pipeline.delivery.alt_text import AltTextError
from pipeline.delivery.feeds import Exporter, FeedError, FeedStats
from pipeline.delivery.urls import PublicUrlError, check_base_url
from tasks.celery_app import app
from tasks.context import WorkerContext
from tasks.dispatch import ShotlineTask
from tasks.queues import TASK_FEEDS

log = logging.getLogger(__name__)

CONTENT_TYPES = {"csv": "text/csv", "tsv": "text/tab-separated-values", "xml": "application/xml"}


def feed_key(brand: str, channel: str, fmt: str) -> str:
    return f"feeds/{brand}/{channel}.{fmt}"


def _written_at(ctx: WorkerContext, state_key: str) -> str | None:
    """The fingerprint the feed at ``state_key``'s file was last written at (None: never)."""
    if not ctx.store.exists(state_key):
        return None
    try:
        return str(json.loads(ctx.store.get(state_key))["fingerprint"])
    except (ValueError, KeyError, TypeError):
        return None  # unreadable: write the feed again


def write_feed(
    ctx: WorkerContext, cfg: BrandConfig, brand_id: int, channel: str, spec: ChannelSpec, base: str
) -> FeedStats:
    """The channel's feed (``spec.feed``) streamed to a temp file, then put at its key."""
    fmt = spec.feed or "tsv"
    exporter = Exporter(cfg, channel, spec, base)
    ctx.settings.var_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ctx.settings.var_dir) as tmp:
        path = Path(tmp) / f"{channel}.{fmt}"
        with ctx.sessions() as s:
            stats = write_export(s, exporter, brand_id, fmt, path)
        ctx.store.put(feed_key(cfg.name, channel, fmt), path.read_bytes(), CONTENT_TYPES[fmt])
    return stats


def refresh_feeds(ctx: WorkerContext) -> dict[str, Any]:
    """Rewrite every configured feed whose brand's fingerprint moved; what it did, per key."""
    try:
        base = check_base_url(ctx.settings.public_base_url)
    except PublicUrlError as exc:
        log.warning("feeds not refreshed: %s", exc)
        return {"skipped": str(exc)}
    with ctx.sessions() as s:
        brands = all_brands(s)
    out: dict[str, Any] = {}
    for brand_id, name, stored in brands:
        try:
            cfg = ctx.brand_config(name, stored)
        except BrandConfigError as exc:
            out[name] = f"brand config does not load: {exc}"
            continue
        feeds = {c: spec for c, spec in (cfg.channels or {}).items() if spec.feed}
        if not feeds:
            continue
        with ctx.sessions() as s:
            fingerprint = feed_fingerprint(s, brand_id)  # before writing: a later one rewrites
        for channel, spec in feeds.items():
            key = feed_key(name, channel, spec.feed or "tsv")
            state_key = f"{key}.state.json"
            if _written_at(ctx, state_key) == fingerprint:
                out[key] = "unchanged"
                continue
            try:
                stats = write_feed(ctx, cfg, brand_id, channel, spec, base)
            except (AltTextError, FeedError) as exc:  # the brand's to fix: say so, go on
                log.warning("%s: not written: %s", key, exc)
                out[key] = f"not written: {exc}"
                continue
            state = {"fingerprint": fingerprint, "written_at": utcnow().isoformat()}
            state |= {k: v for k, v in asdict(stats).items() if k != "urls"}
            ctx.store.put(state_key, json.dumps(state).encode(), "application/json")
            out[key] = {"images": stats.images, "products": stats.products}
    return out


@app.task(name=TASK_FEEDS, base=ShotlineTask, bind=True)
def refresh_feeds_task(self: ShotlineTask) -> dict[str, Any]:
    return refresh_feeds(self.context)
