"""Publish: approved -> published. The gated final file is copied under its published key
(server-side on S3), each delivery channel's renditions are made from it and stored next to
it (``pipeline.delivery.renditions``: watermark re-verified in every file), then the
``assets`` and ``asset_renditions`` rows are written. Already published shots are skipped
(a no-op), so a redelivered message is harmless."""

from __future__ import annotations

from typing import Any

from catalog.shots import stored_brand_configs
from pipeline.delivery.renditions import RenditionError, channel_renditions
from pipeline.failures import Failure, FailureKind
from pipeline.images import ImageError
from pipeline.keys import published_key
from pipeline.storage import BlobInfo
from tasks import metrics
from tasks.context import WorkerContext
from tasks.line.claim import PublishShot, claim_for_publish
from tasks.line.record import Published, record_published
from tasks.line.renditions import Wanted, store_renditions
from tasks.line.results import LineResult


def _copy_final(ctx: WorkerContext, shot: PublishShot) -> BlobInfo | Failure:
    info, final, sid = shot.info, shot.final, shot.info.shot_id
    if final is None:
        return Failure(FailureKind.storage, "approved but has no gated final image")
    ext = final.key.rsplit(".", 1)[-1]
    key = published_key(info.brand, info.sku, info.template, final.sha256, ext)
    meta = {"shot-id": str(sid)}
    try:
        # Server-side on S3: one request instead of a download and an upload.
        blob = ctx.store.copy(final.key, key, final.content_type, meta, src_info=final)
    except FileNotFoundError:
        reason = f"final image {final.key} is missing from the blob store"
        return Failure(FailureKind.storage, reason)
    if blob.sha256 and blob.sha256 != final.sha256:
        reason = f"published {key} does not match the recorded sha256"
        return Failure(FailureKind.storage, reason)
    return blob


def _renditions(ctx: WorkerContext, shot: PublishShot, wanted: Wanted) -> list[dict[str, Any]]:
    """Make and store ``wanted`` from the final file; row values for ``asset_renditions``."""
    final = shot.final
    assert final is not None  # _copy_final refused it otherwise
    return store_renditions(ctx, shot.info, ctx.store.get(final.key), wanted)


def _publish_one(
    ctx: WorkerContext, shot: PublishShot, wanted: Wanted
) -> tuple[int, Published | Failure]:
    sid = shot.info.shot_id
    blob = _copy_final(ctx, shot)
    if isinstance(blob, Failure):
        return sid, blob
    try:
        return sid, Published(blob, _renditions(ctx, shot, wanted))
    except FileNotFoundError:
        return sid, Failure(FailureKind.storage, f"final image {blob.key} vanished while read")
    except ImageError as exc:
        return sid, Failure(FailureKind.storage, f"final image unreadable: {exc}")
    except RenditionError as exc:
        # A channel's config the image cannot meet (max_bytes), or a watermark lost.
        return sid, Failure(FailureKind.rendition, f"rendition {exc}")


def _wanted(ctx: WorkerContext, claimed: dict[int, PublishShot]) -> dict[str, Wanted]:
    """Each brand's (channel, rendition) pairs, from the config stored on its brand row."""
    with ctx.sessions.begin() as s:
        configs = stored_brand_configs(s, {p.info.brand for p in claimed.values()})
    return {name: channel_renditions(cfg.get("channels")) for name, cfg in configs.items()}


def publish(ctx: WorkerContext, shot_ids: list[int]) -> LineResult:
    result = LineResult()
    claimed = claim_for_publish(ctx, shot_ids)
    result.skipped = [i for i in shot_ids if i not in claimed]
    wanted = _wanted(ctx, claimed) if claimed else {}
    done = ctx.io_map(
        lambda p: _publish_one(ctx, p, wanted.get(p.info.brand, [])), list(claimed.values())
    )
    record_published(ctx, done, result)
    metrics.record_published(len(result.published))
    return result
