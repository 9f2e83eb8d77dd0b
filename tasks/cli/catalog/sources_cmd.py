"""``shotline sources fetch|list``: the catalog's source images (packshots)."""

from __future__ import annotations

import time
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from catalog.brands import get_brand
from catalog.models import SourceImage, SourceStatus
from catalog.packshots.sources import brand_sources
from tasks.cli.common import CliState, cli_state, console, fail, print_json
from tasks.output import styled

sources_app = typer.Typer(help="Source images named by the catalog: fetch and inspect them.")


def _brand_id(state: CliState, name: str) -> int:
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


@sources_app.command("fetch")
def fetch(
    ctx: typer.Context,
    brand: str = typer.Option(..., "--brand", help="brand whose current products to fetch for"),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="fetch failed ones again"),
    refresh: bool = typer.Option(
        False, "--refresh", help="re-check fetched ones (ETag/sha256: unchanged ones are kept)"
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Download the brand's source images into the blob store (the cpu queue, or here)."""
    from tasks.fetch import fetch_for_brand

    state = cli_state(ctx)
    brand_id = _brand_id(state, brand)
    started = time.monotonic()
    ids = fetch_for_brand(state.settings, brand_id, retry_failed=retry_failed, refresh=refresh)
    counts: dict[str, int] = {}
    with state.session() as s:
        rows = [r for r in brand_sources(s, brand_id) if r.id in set(ids)]
        for r in rows:
            counts[r.status] = counts.get(r.status, 0) + 1
        failed = [(r.url, r.error or "") for r in rows if r.status == SourceStatus.failed.value]
    summary = {"sent": len(ids), "states": counts, "seconds": round(time.monotonic() - started, 2)}
    if as_json:
        print_json({**summary, "failed": [e for _, e in failed]})
        return
    where = "in this process" if state.settings.embedded else "to the cpu queue"
    console.print(styled(f"{len(ids)} source images sent {where}: ", str(counts or "none")))
    for _, error in failed:
        console.print(styled(("failed:", "red"), " ", error))


@sources_app.command("list")
def list_sources(
    ctx: typer.Context,
    brand: str = typer.Option(..., "--brand"),
    status: str | None = typer.Option(None, "--status", help="pending, fetched or failed"),
    limit: int = typer.Option(50, "--limit"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The brand's source images with their state, size and sha256 (or the error)."""
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
