"""``shotline renditions backfill``: the renditions an asset lacks because it was published
before its brand configured the channel, made from its published master exactly as publish
makes them (``tasks.line.renditions``) and recorded the same way (``record_renditions``).

A page of assets at a time: read which lack a wanted file, make and store the missing ones
on the I/O pool, then write their rows in one short transaction. A rendition that cannot be
made (over ``max_bytes``, watermark lost) is a failure with its reason; the asset's other
renditions and the other assets go on. Run again, it makes nothing: every row it wrote now
exists (and a row written twice is ignored by the unique asset, channel, name)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from catalog.delivery.backfill import Lacking, count_current, lacking_page
from catalog.delivery.renditions import record_renditions
from pipeline.delivery.renditions import RenditionError
from pipeline.failures import one_line
from pipeline.images import ImageError
from pipeline.storage import StorageError
from tasks.context import WorkerContext
from tasks.line.renditions import Wanted, store_renditions

PAGE = 200  # assets per page: one page's masters are in memory at once, at most


@dataclass(frozen=True)
class BackfillFailure:
    asset_id: int
    shot_id: int
    rendition: str  # "channel/name", or "master" when none could be tried
    reason: str


@dataclass
class BackfillResult:
    checked: int = 0  # current assets looked at
    assets: int = 0  # assets that got at least one rendition
    renditions: int = 0
    failures: list[BackfillFailure] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "assets": self.assets,
            "renditions": self.renditions,
            "failures": [f.__dict__ for f in self.failures],
        }


Filled = tuple[list[dict[str, Any]], list[BackfillFailure]]


def _fill(ctx: WorkerContext, asset: Lacking, wanted: Wanted) -> Filled:
    todo = [(c, spec) for c, spec in wanted if (c, spec.name) in asset.missing]
    sid = asset.info.shot_id

    def failed(what: str, why: str) -> BackfillFailure:
        return BackfillFailure(asset.asset_id, sid, what, one_line(why))

    try:
        master = ctx.store.get(asset.master_key)
    except (FileNotFoundError, StorageError) as exc:
        return [], [failed("master", f"master {asset.master_key} cannot be read: {exc}")]
    try:  # the usual case: all at once, one decode of the master, shared encodes
        return store_renditions(ctx, asset.info, master, todo), []
    except ImageError as exc:
        return [], [failed("master", f"master {asset.master_key} unreadable: {exc}")]
    except StorageError as exc:
        return [], [failed("master", f"cannot store a rendition: {exc}")]
    except RenditionError:
        pass
    rows, fails = [], []
    for channel, spec in todo:  # one refused: make the others one by one
        try:
            rows += store_renditions(ctx, asset.info, master, [(channel, spec)])
        except (RenditionError, StorageError) as exc:
            fails.append(failed(f"{channel}/{spec.name}", str(exc)))
    return rows, fails


def backfill(
    ctx: WorkerContext,
    brand_id: int,
    wanted: Wanted,
    progress: Callable[[int, int], None] | None = None,
    page: int = PAGE,
) -> BackfillResult:
    """Fill the ``wanted`` (channel, rendition) files every current asset of ``brand_id``
    lacks. ``progress(done, total)`` after each page."""
    result = BackfillResult()
    pairs = [(c, spec.name) for c, spec in wanted]
    with ctx.sessions.begin() as s:
        total = count_current(s, brand_id)
    after: int | None = 0
    while after is not None:
        with ctx.sessions.begin() as s:
            lacking, after, read = lacking_page(s, brand_id, pairs, after, page)
        done = ctx.io_map(lambda a: _fill(ctx, a, wanted), lacking)
        rows = {a.info.shot_id: made for a, (made, _) in zip(lacking, done, strict=True) if made}
        if rows:
            with ctx.sessions.begin() as s:
                record_renditions(s, rows)
        result.checked += read
        result.assets += len(rows)
        result.renditions += sum(len(r) for r in rows.values())
        result.failures += [f for _, fails in done for f in fails]
        if progress is not None:
            progress(result.checked, max(total, result.checked))
    return result
