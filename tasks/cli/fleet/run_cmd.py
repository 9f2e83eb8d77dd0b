"""``shotline run``: every planned shot through generate -> gate.

In-process when no broker is configured (the embedded default), else on the Celery fleet,
followed from the database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.markup import escape

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
    from tasks.runner import RunSummary


def _require_brand(state: CliState, brand: str) -> None:
    from catalog.brands import get_brand

    with state.session() as s:
        if get_brand(s, brand) is None:
            fail(f"unknown brand {brand!r} (import its catalog first)")


def _warn_model_override(state: CliState, brand: str | None) -> None:
    """Shots pin their model when they are planned, so ``SHOTLINE_MODEL`` set only for ``run``
    changes nothing: say so instead of running the planned model silently."""
    from catalog.status import planned_models

    wanted = state.settings.model
    if not wanted:
        return
    with state.session() as s:
        pinned = [m for m in planned_models(s, brand) if m != wanted]
    if pinned:
        err_console.print(
            styled(
                ("warning:", "yellow"),
                f" SHOTLINE_MODEL={wanted} is ignored by run: the planned shots pinned "
                f"{', '.join(pinned)} when they were planned (re-plan to change the model)",
            ),
            soft_wrap=True,
        )


def _all_failed(summary: RunSummary) -> str | None:
    """The one line for a run in which every shot failed (bad weights, a broken config)."""
    if not summary.total or summary.counts.get("failed", 0) != summary.total:
        return None
    first = summary.failures[0]["error"] if summary.failures else "see `shotline status`"
    return f"all {summary.total} shot(s) failed; first reason: {first}"


def _print_summary(summary: RunSummary, brand: str | None) -> None:
    if not summary.total:
        console.print("nothing planned" + (f" for {escape(brand)}" if brand else ""))
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
    _warn_model_override(state, brand)
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
    reason = _all_failed(summary)
    if reason is not None:
        fail(reason)
