"""``shotline sources fetch|list``: the catalog's source images (packshots).

``sources fetch`` exits 0 when every image it sent was fetched (or found unchanged), 1 when
any failed or (on a fleet) is still pending when it stops waiting, 2 for bad input and for a
blob store that cannot take the images at all (no bucket, access denied).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from tasks.cli.common import (
    COUNT_MAX,
    CliState,
    cli_state,
    console,
    err_console,
    fail,
    print_json,
)
from tasks.output import styled

if TYPE_CHECKING:
    from catalog.models import SourceImage


sources_app = typer.Typer(help="Source images named by the catalog: fetch and inspect them.")


def _brand_id(state: CliState, name: str) -> int:
    from catalog.brands import get_brand

    with state.session() as s:
        row = get_brand(s, name)
        if row is None:
            fail(f"brand {name!r} has no imported catalog (run shotline import first)")
        return row.id


def _row(r: SourceImage) -> dict[str, Any]:
    return {
        "id": r.id,
        "url": r.url,
        "status": r.status,
        "sha256": r.sha256,
        "bytes": r.size_bytes,
        "width": r.width,
        "height": r.height,
        "content_type": r.content_type,
        "etag": r.etag,
        "last_modified": r.last_modified,
        "fetched_at": r.fetched_at,
        "error": r.error,
    }


def _check_store(state: CliState) -> None:
    """A bucket that is missing or refused is said once, up front, with exit 2: every fetch
    would fail the same way (and on a fleet only a worker log would say why)."""
    from pipeline.storage import S3BlobStore, StorageError, make_blob_store

    store = make_blob_store(state.settings)
    if not isinstance(store, S3BlobStore):
        return
    try:
        store.check_bucket()
    except StorageError as exc:
        fail(f"cannot store source images: {exc}")


def _attempts(state: CliState, brand_id: int) -> dict[int, int]:
    from catalog.packshots.sources import brand_sources

    with state.session() as s:
        return {r.id: r.attempts for r in brand_sources(s, brand_id)}


def _wait_for_fleet(
    state: CliState, brand_id: int, ids: list[int], before: dict[int, int], timeout_s: float
) -> None:
    """Follow the cpu queue's work from the database: done when every sent row has been
    tried once more than before it was sent (a fetch always records its outcome)."""
    from tasks.cli.fleet.fleet_info import missing_consumers, start_hint
    from tasks.queues import QUEUE_CPU

    if missing_consumers(state.settings, [QUEUE_CPU]):
        err_console.print(
            styled(
                ("warning:", "yellow"),
                f" no worker consumes {QUEUE_CPU}: the images stay pending until one starts "
                f"(`{start_hint(QUEUE_CPU)}`)",
            ),
            soft_wrap=True,
        )
        return
    wanted = set(ids)
    deadline = time.monotonic() + timeout_s
    with err_console.status(f"fetching {len(ids)} source images on the {QUEUE_CPU} queue…"):
        while time.monotonic() < deadline:
            now = _attempts(state, brand_id)
            if all(now.get(i, 0) > before.get(i, 0) for i in wanted):
                return
            time.sleep(1.0)


def _summary_line(sent: int, counts: dict[str, int], where: str, seconds: float) -> str:
    from catalog.models import SourceStatus

    order = [SourceStatus.fetched.value, SourceStatus.failed.value, SourceStatus.pending.value]
    parts = [f"{counts[k]} {k}" for k in order if counts.get(k)]
    parts += [f"{n} {k}" for k, n in sorted(counts.items()) if k not in order and n]
    return f"{sent} source image(s) sent {where} in {seconds:.1f}s: {', '.join(parts) or 'none'}"


@sources_app.command("fetch")
def fetch(
    ctx: typer.Context,
    brand: str = typer.Option(..., "--brand", help="brand whose current products to fetch for"),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="fetch failed ones again"),
    refresh: bool = typer.Option(
        False, "--refresh", help="re-check fetched ones (ETag/sha256: unchanged ones are kept)"
    ),
    as_json: bool = typer.Option(False, "--json"),
    wait: bool = typer.Option(
        True, "--wait/--no-wait", help="fleet: wait for the cpu queue to fetch them"
    ),
    timeout: float = typer.Option(
        600.0, "--timeout", min=1, max=86_400, help="fleet: stop waiting after this many seconds"
    ),
) -> None:
    """Download the brand's source images into the blob store (the cpu queue, or here).

    Exit status: 0 when every image was fetched or unchanged; 1 when any failed, or is still
    pending when waiting stops; 2 for an unknown brand or a bucket that cannot be written.
    """
    from catalog.models import SourceStatus
    from catalog.packshots.sources import brand_sources
    from pipeline.storage import StorageError
    from tasks.fetch import fetch_for_brand

    state = cli_state(ctx)
    brand_id = _brand_id(state, brand)
    _check_store(state)
    started = time.monotonic()
    before = _attempts(state, brand_id)
    try:
        ids = fetch_for_brand(state.settings, brand_id, retry_failed=retry_failed, refresh=refresh)
    except StorageError as exc:  # embedded: the blob store failed under the fetch itself
        fail(f"cannot store source images: {exc}")
    if ids and wait and not state.settings.embedded:
        _wait_for_fleet(state, brand_id, ids, before, timeout)
    counts: dict[str, int] = {}
    with state.session() as s:
        rows = [r for r in brand_sources(s, brand_id) if r.id in set(ids)]
        for r in rows:
            counts[r.status] = counts.get(r.status, 0) + 1
        failed = [(r.url, r.error or "") for r in rows if r.status == SourceStatus.failed.value]
    seconds = round(time.monotonic() - started, 2)
    summary = {"sent": len(ids), "states": counts, "seconds": seconds}
    if as_json:
        print_json({**summary, "failed": [e for _, e in failed]})
    else:
        where = "in this process" if state.settings.embedded else "to the cpu queue"
        console.print(styled(_summary_line(len(ids), counts, where, seconds)), highlight=False)
        for _, error in failed:
            console.print(styled(("failed:", "red"), " ", error), highlight=False)
    pending = counts.get(SourceStatus.pending.value, 0) if wait else 0
    if failed or pending:
        raise typer.Exit(1)


@sources_app.command("list")
def list_sources(
    ctx: typer.Context,
    brand: str = typer.Option(..., "--brand"),
    status: str | None = typer.Option(None, "--status", help="pending, fetched or failed"),
    limit: int = typer.Option(
        50, "--limit", min=0, max=COUNT_MAX, help="At most this many rows (0: all)."
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The brand's source images with their state, size and sha256 (or the error)."""
    from catalog.models import SourceStatus
    from catalog.packshots.sources import brand_sources

    if status is not None and status not in {s.value for s in SourceStatus}:
        fail(f"unknown status {status!r}; use pending, fetched or failed")
    state = cli_state(ctx)
    brand_id = _brand_id(state, brand)
    with state.session() as s:
        rows = [_row(r) for r in brand_sources(s, brand_id, status, limit or None)]
    if as_json:
        print_json(rows)
        return
    table = Table(title=f"{brand}: {len(rows)} source images")
    for col in ("id", "status", "size", "sha256", "url / error"):
        table.add_column(col, overflow="fold")
    for r in rows:
        size = f"{r['width']}x{r['height']}" if r["width"] else "-"
        table.add_row(
            str(r["id"]),
            r["status"],
            size,
            (r["sha256"] or "-")[:12],
            escape(r["error"] or r["url"]),  # catalog text: never markup
        )
    console.print(table)
