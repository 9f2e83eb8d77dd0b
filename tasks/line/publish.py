"""Publish: approved -> published. The gated final file is copied under its published key
(server-side on S3), then the ``assets`` row is written. Already published shots are skipped
(a no-op), so a redelivered message is harmless."""

from __future__ import annotations

from pipeline.failures import Failure, FailureKind
from pipeline.keys import published_key
from pipeline.storage import BlobInfo
from tasks import metrics
from tasks.context import WorkerContext
from tasks.line.claim import PublishShot, claim_for_publish
from tasks.line.record import record_published
from tasks.line.results import LineResult


def _copy_final(ctx: WorkerContext, shot: PublishShot) -> tuple[int, BlobInfo | Failure]:
    info, final, sid = shot.info, shot.final, shot.info.shot_id
    if final is None:
        return sid, Failure(FailureKind.storage, "approved but has no gated final image")
    ext = final.key.rsplit(".", 1)[-1]
    key = published_key(info.brand, info.sku, info.template, final.sha256, ext)
    meta = {"shot-id": str(sid)}
    try:
        # Server-side on S3: one request instead of a download and an upload.
        blob = ctx.store.copy(final.key, key, final.content_type, meta, src_info=final)
    except FileNotFoundError:
        reason = f"final image {final.key} is missing from the blob store"
        return sid, Failure(FailureKind.storage, reason)
    if blob.sha256 and blob.sha256 != final.sha256:
        reason = f"published {key} does not match the recorded sha256"
        return sid, Failure(FailureKind.storage, reason)
    return sid, blob


def publish(ctx: WorkerContext, shot_ids: list[int]) -> LineResult:
    result = LineResult()
    claimed = claim_for_publish(ctx, shot_ids)
    result.skipped = [i for i in shot_ids if i not in claimed]
    copied = ctx.io_map(lambda p: _copy_final(ctx, p), list(claimed.values()))
    record_published(ctx, copied, result)
    metrics.record_published(len(result.published))
    return result
