"""``shotline brands check FILE`` and ``shotline plan --brand NAME``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from catalog.planning import PlanningError, PlanSummary, describe_shots, plan_shots
from pipeline.brand.config import BrandConfigError
from pipeline.brand.loader import brand_warnings, find_brand, load_brand, located_error
from tasks.cli.app import app
from tasks.cli.common import console, err_console, fail, print_json, session, settings

brands_app = typer.Typer(help="Brand configs (samples/brands/*.yaml).", no_args_is_help=True)
app.add_typer(brands_app, name="brands")

PREVIEW_CHARS = 72


def _report(exc: BrandConfigError) -> None:
    """One line per problem (``file:line: field: message``), never wrapped, then exit 2."""
    for line in exc.lines():
        err_console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@brands_app.command("check")
def check(
    file: Path = typer.Argument(..., help="A brand YAML file."),
    hash_files: bool = typer.Option(
        True, "--hash/--no-hash", help="Check local LoRA files against their sha256 pins."
    ),
) -> None:
    """Validate a brand file: exit 0 and print ok, or exit 2 with one line per problem."""
    try:
        cfg = load_brand(file)
        if hash_files:
            pins = cfg.pin_problems()
            if pins:
                raise located_error(file, pins)
    except BrandConfigError as exc:
        _report(exc)
    for w in brand_warnings(cfg):
        err_console.print(f"[yellow]warning:[/] {escape(f'{file}: {w}')}", soft_wrap=True)
    console.print(
        f"ok: {escape(str(file))} (brand {escape(cfg.name)}, {len(cfg.templates)} templates, "
        f"{len(cfg.loras)} LoRAs, digest {cfg.digest()[:12]})",
        highlight=False,
        soft_wrap=True,
    )


@brands_app.command("list")
def list_brands() -> None:
    """The brand files in the brands folder and whether each one is valid."""
    folder = settings().brands_dir
    table = Table("brand", "file", "templates", "status")
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        try:
            cfg = load_brand(path)
        except BrandConfigError as exc:
            table.add_row(path.stem, str(path), "-", f"[red]{len(exc.problems)} problem(s)[/]")
            continue
        table.add_row(cfg.name, str(path), ", ".join(cfg.templates), "[green]ok[/]")
    console.print(table)


def _preview(text: str, n: int = PREVIEW_CHARS) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def plan_table(
    summary: PlanSummary, rows: Sequence[Mapping[str, Any]], limit: int = 50, wide: bool = True
) -> Table:
    """The planned shots as a rich table with prompt previews (reused by the demo).

    ``wide=False`` (narrow terminals) leaves out seed and size; ``--json`` has everything.
    """
    table = Table(
        title=(
            f"{summary.brand}: {summary.created} new, {summary.existing} existing shots "
            f"for {summary.products} products"
        ),
        caption=f"showing {limit} of {len(rows)} (--show 0 for all)"
        if limit and len(rows) > limit
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
        table.add_row(*cells, escape(_preview(row["prompt"])), escape(" ".join(notes)))
    return table


@app.command("plan")
def plan(
    brand: str = typer.Option(..., "--brand", help="Brand name (samples/brands/NAME.yaml)."),
    template: list[str] = typer.Option(
        None, "--template", help="Only this template (repeatable). Default: all."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    show: int = typer.Option(50, "--show", help="Rows to show in the table (0 = all)."),
) -> None:
    """Plan one shot per (current product revision, visual variant, template). Idempotent."""
    cfg_settings = settings()
    try:
        cfg = find_brand(cfg_settings.brands_dir, brand)
    except BrandConfigError as exc:
        _report(exc)
    try:
        with session() as s:
            if as_json:
                summary = plan_shots(s, cfg, cfg_settings, template or None)
            else:
                with Progress(console=err_console, transient=True) as bar:
                    task = bar.add_task(f"planning {cfg.name}", total=None)
                    summary = plan_shots(
                        s,
                        cfg,
                        cfg_settings,
                        template or None,
                        progress=lambda done, total: bar.update(task, completed=done, total=total),
                    )
            rows = describe_shots(s, summary.shots)
    except PlanningError as exc:
        fail(escape(str(exc)))
    except BrandConfigError as exc:
        _report(exc)
    if as_json:
        print_json({**summary.to_json(), "planned": rows})
        return
    console.print(plan_table(summary, rows, show, wide=console.width >= 120))
    for w in summary.warnings[:20]:
        err_console.print(f"[yellow]warning:[/] {escape(w)}", soft_wrap=True)
    if len(summary.warnings) > 20:
        err_console.print(
            f"[yellow]warning:[/] … and {len(summary.warnings) - 20} more (see --json)"
        )
    if summary.skipped:
        err_console.print(f"[yellow]{summary.skipped} shot(s) skipped[/]: their prompts failed")
