"""``shotline status``: counts by state, source images by fetch status, recent throughput,
failures, and on a fleet the queue depths and the workers consuming each queue."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from tasks.cli.common import clean, cli_state, console, print_json
from tasks.cli.fleet.fleet_info import FleetInfo, fleet_info

if TYPE_CHECKING:
    pass


def _print_report(report: dict[str, Any], brand: str | None) -> None:
    table = Table(title="shots by state" + (f" ({escape(brand)})" if brand else ""))
    table.add_column("state")
    table.add_column("count", justify="right")
    for state, n in report["counts"].items():
        table.add_row(state, str(n))
    table.add_row("[bold]total[/]", f"[bold]{report['total']}[/]")
    console.print(table)
    sources = report.get("source_images") or {}
    if sources:
        parts = ", ".join(f"{state} {n}" for state, n in sorted(sources.items()))
        console.print(f"source images (packshots): {parts}", highlight=False)
    tp = report["throughput"]
    console.print(
        f"last {tp['window_minutes']} min: generated {tp['generated']} "
        f"({tp['generated_per_min']}/min), gated {tp['gated']}, published {tp['published']}"
    )
    kinds = report.get("failure_kinds") or {}
    if kinds:
        parts = ", ".join(f"{kind} {n}" for kind, n in kinds.items())
        console.print(f"[red]failed[/] by kind: {parts}", highlight=False)
    retry = report.get("retryable_failures") or {}
    if retry:
        parts = ", ".join(f"{kind} {n}" for kind, n in retry.items())
        console.print(f"retryable (run --retry-failed): {parts}", highlight=False)
    for f in report["failures"]:
        console.print(
            f"[red]failed[/] shot {f['shot_id']} ({f.get('kind') or 'unknown'}) after "
            f"{f['attempts']} attempt(s): " + escape(str(f["error"])),
            highlight=False,
        )


def _print_fleet(info: FleetInfo) -> None:
    if not info.reachable:
        console.print(f"broker: unreachable ({clean(info.error)})", markup=False)
        return
    table = Table(title="queues")
    table.add_column("queue")
    table.add_column("waiting", justify="right")
    table.add_column("workers")
    for queue in info.queues():
        workers = info.consumers(queue)
        shown = ", ".join(escape(clean(w)) for w in workers) if workers else "[red]none[/]"
        table.add_row(escape(queue), str(info.depths.get(queue, 0)), shown)
    console.print(table)
    console.print(f"{len(info.workers)} worker(s) answering", highlight=False)


def status(
    ctx: typer.Context,
    brand: str | None = typer.Option(None, "--brand", help="Only this brand."),
    minutes: int = typer.Option(5, "--minutes", min=1, max=525_600, help="Throughput window."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Counts by state, throughput over the last minutes, and failures with their reasons."""
    from catalog.status import status_report

    state = cli_state(ctx)
    with state.session() as s:
        report = status_report(s, brand=brand, minutes=minutes)
    info = None if state.settings.embedded else fleet_info(state.settings)
    if as_json:
        print_json({**report, "fleet": info.to_json() if info is not None else None})
        return
    _print_report(report, brand)
    if info is not None:
        _print_fleet(info)
