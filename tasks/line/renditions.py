"""Renditions made from a published master and stored next to it, with their
``asset_renditions`` row values: what publish does for every new asset and ``renditions
backfill`` does for an asset published before its brand configured a channel."""

from __future__ import annotations

from typing import Any

from catalog.shots import ShotInfo
from pipeline.brand.config import RenditionSpec
from pipeline.delivery.renditions import Rendition, make_renditions
from pipeline.keys import published_key
from tasks.context import WorkerContext

Wanted = list[tuple[str, RenditionSpec]]


def store_renditions(
    ctx: WorkerContext, info: ShotInfo, master: bytes, wanted: Wanted
) -> list[dict[str, Any]]:
    """Make ``wanted`` from the master's bytes, store each under its published key; the
    row values for ``asset_renditions``. ``RenditionError`` when one cannot be made (then
    none is stored)."""
    made = make_renditions(master, wanted, info.shot_id, watermark_keys(ctx))
    return [_stored(ctx, info, r) for r in made]


def _stored(ctx: WorkerContext, info: ShotInfo, r: Rendition) -> dict[str, Any]:
    key = published_key(info.brand, info.sku, info.template, r.sha256, r.ext)
    blob = ctx.store.put(key, r.data, r.content_type, {"shot-id": str(info.shot_id)})
    return {
        "channel": r.channel,
        "name": r.name,
        "backend": blob.backend,
        "bucket": blob.bucket,
        "key": key,
        "sha256": r.sha256,
        "size_bytes": len(r.data),
        "content_type": r.content_type,
        "width": r.width,
        "height": r.height,
        "quality": r.quality,
        "watermark_verified": r.watermark_verified,
        "bit_accuracy": r.bit_accuracy,
        "xmp_ai_tag": r.xmp_ai_tag,
        "icc_srgb": r.icc_srgb,
    }


def watermark_keys(ctx: WorkerContext) -> Any:
    """The deployment's watermark keys: a re-embedded rendition mark is keyed as its master's."""
    from pipeline.gate.stage import watermark_keys as keys

    return keys(ctx.settings)
