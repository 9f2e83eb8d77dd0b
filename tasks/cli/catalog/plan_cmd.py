"""``shotline plan --brand NAME``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from tasks.cli.catalog.brands_cmd import report_brand_error
from tasks.cli.common import (
    COUNT_MAX,
    CliState,
    cli_state,
    console,
    err_console,
    fail,
    print_json,
)

if TYPE_CHECKING:
    from catalog.planning import PlanSummary
    from pipeline.brand.config import BrandConfig


PREVIEW_CHARS = 72
SHOWN_WARNINGS = 20


def _preview(text: str, n: int = PREVIEW_CHARS) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _plan_row(row: Mapping[str, Any], wide: bool) -> list[str]:
    notes = []
    if row["sanitizer_removals"]:
        notes.append(f"-{sum(int(r.get('count', 1)) for r in row['sanitizer_removals'])} term")
    if row["prompt_warnings"]:
        notes.append(f"{len(row['prompt_warnings'])} warn")
    cells = [
        str(row["id"]),
        escape(row["product"]),
        escape(", ".join(row["variant"].values()) or "-"),
        escape(row["template"]),
    ]
    if wide:
        cells += [str(row["seed"]), f"{row['width']}x{row['height']}/{row['steps']}"]
    return [*cells, escape(_preview(row["prompt"])), escape(" ".join(notes))]


def plan_table(
    summary: PlanSummary, rows: Sequence[Mapping[str, Any]], limit: int = 50, wide: bool = True
) -> Table:
    """The planned shots as a rich table with prompt previews (reused by the demo).

    ``wide=False`` (narrow terminals) leaves out seed and size; ``--json`` has everything.
    """
    table = Table(
        title=(
            f"{escape(summary.brand)}: {summary.created} new, {summary.existing} existing shots "
            f"for {summary.products} products"
        ),
        caption=f"showing {limit} of {len(summary.shots)} (--show 0 for all)"
        if limit and len(summary.shots) > limit
        else None,
    )
    # Everything but the prompt stays on one line; the prompt preview takes the rest.
    table.add_column("shot", no_wrap=True, justify="right")
    table.add_column("product", no_wrap=True, max_width=24)
    table.add_column("variant", no_wrap=True, max_width=20)
    table.add_column("template", no_wrap=True)
    if wide:
        table.add_column("seed", no_wrap=True)
        table.add_column("size", no_wrap=True)
    table.add_column("prompt", ratio=1, min_width=20)
    table.add_column("notes")
    for row in rows[:limit] if limit else rows:
        table.add_row(*_plan_row(row, wide))
    return table


def _plan(
    state: CliState,
    cfg: BrandConfig,
    templates: list[str] | None,
    quiet: bool,
    describe: int | None = None,
) -> tuple[PlanSummary, list[dict[str, Any]]]:
    """Plan and describe the shots (the first ``describe`` of them; None: all) in one
    transaction; a spinner on stderr unless ``quiet``."""
    from catalog.planning import describe_shots, plan_shots

    with state.session() as s:
        if quiet:
            summary = plan_shots(s, cfg, state.settings, templates)
        else:
            with Progress(console=err_console, transient=True) as bar:
                task = bar.add_task(f"planning {cfg.name}", total=None)
                summary = plan_shots(
                    s,
                    cfg,
                    state.settings,
                    templates,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )
        shown = summary.shots if describe is None else summary.shots[:describe]
        return summary, describe_shots(s, shown)


def _print_plan(summary: PlanSummary, rows: list[dict[str, Any]], show: int) -> None:
    console.print(plan_table(summary, rows, show, wide=console.width >= 120))
    for w in summary.warnings[:SHOWN_WARNINGS]:
        err_console.print(f"[yellow]warning:[/] {escape(w)}", soft_wrap=True)
    if len(summary.warnings) > SHOWN_WARNINGS:
        err_console.print(
            f"[yellow]warning:[/] … and {len(summary.warnings) - SHOWN_WARNINGS} more (see --json)"
        )
    if summary.skipped:
        err_console.print(f"[yellow]{summary.skipped} shot(s) skipped[/]: their prompts failed")


def plan(
    ctx: typer.Context,
    brand: str = typer.Option(..., "--brand", help="Brand name (samples/brands/NAME.yaml)."),
    template: list[str] = typer.Option(
        None, "--template", help="Only this template (repeatable). Default: all."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    show: int = typer.Option(
        50, "--show", min=0, max=COUNT_MAX, help="Rows to show in the table (0 = all)."
    ),
) -> None:
    """Plan one shot per (current product revision, visual variant, template). Idempotent."""
    from catalog.planning import PlanningError
    from pipeline.brand.config import BrandConfigError
    from pipeline.brand.loader import find_brand

    state = cli_state(ctx)
    try:
        cfg = find_brand(state.settings.brands_dir, brand)
    except BrandConfigError as exc:
        report_brand_error(exc)
    try:
        # The table shows --show rows: describing the other shots of a 100k-product catalog
        # would load every one of them for nothing.
        describe = None if as_json or show == 0 else show
        summary, rows = _plan(state, cfg, template or None, quiet=as_json, describe=describe)
    except PlanningError as exc:
        fail(str(exc))
    except BrandConfigError as exc:
        report_brand_error(exc)
    if as_json:
        print_json({**summary.to_json(), "planned": rows})
    else:
        _print_plan(summary, rows, show)
