"""``shotline run``: every planned shot through generate -> gate.

In-process when no broker is configured (the embedded default), else on the Celery fleet,
followed from the database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from tasks.cli.common import COUNT_MAX, CliState, cli_state, console, fail, print_json

if TYPE_CHECKING:
    from tasks.runner import RunSummary


def _require_brand(state: CliState, brand: str) -> None:
    from catalog.brands import get_brand

    with state.session() as s:
        if get_brand(s, brand) is None:
            fail(f"unknown brand {brand!r} (import its catalog first)")


def _print_summary(summary: RunSummary, brand: str | None) -> None:
    if not summary.total:
        console.print("nothing planned" + (f" for {brand}" if brand else ""))
        return
    counts = ", ".join(f"{k}={v}" for k, v in sorted(summary.counts.items()))
    console.print(
        f"{summary.total} shot(s) in {summary.elapsed_s:.1f}s "
        f"({summary.shots_per_s:.2f}/s, {summary.mode}): {counts}"
    )
    for f in summary.failures[:10]:
        console.print(
            f"[red]failed[/] shot {f['shot_id']} ({f['attempts']}x): {escape(str(f['error']))}"
        )
    if not summary.complete:
        fail("stopped following before every shot finished; `shotline status` shows progress", 1)


def run(
    ctx: typer.Context,
    brand: str | None = typer.Option(None, "--brand", help="Only this brand's shots."),
    limit: int | None = typer.Option(
        None, "--limit", min=1, max=COUNT_MAX, help="At most this many shots."
    ),
    timeout: float | None = typer.Option(
        None, "--timeout", min=1, help="Fleet mode: stop following after this many seconds."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Run planned shots through generate -> gate, with a progress bar and an ETA."""
    from pipeline.brand.config import BrandConfigError
    from tasks.runner import run_line

    state = cli_state(ctx)
    if brand:
        _require_brand(state, brand)
    try:
        summary = run_line(
            state.settings, brand=brand, limit=limit, progress=not as_json, timeout_s=timeout
        )
    except BrandConfigError as exc:
        fail(str(exc))
    if as_json:
        print_json(summary.to_json())
    else:
        _print_summary(summary, brand)
