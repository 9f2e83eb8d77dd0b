"""``shotline import PATH --brand NAME [--format ...] [--json]``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from tasks.cli.common import cli_state, console, err_console, fail, print_json

if TYPE_CHECKING:
    from catalog.importing.importer import ImportSummary

# catalog.importing.csv_formats.FORMATS, named here for --help: that module imports pandas,
# which `shotline --help` must not (tests/tasks/test_cli_startup.py checks the two agree).
FORMAT_NAMES = ("shopify", "woocommerce", "gmc", "generic")


def _table(summary: ImportSummary) -> Table:
    table = Table(
        title=f"import run {summary.run_id}: {escape(str(summary.source))}", show_header=False
    )
    table.add_column(style="bold")
    table.add_column(justify="right")
    for label, value in (
        ("format", summary.format),
        ("encoding", escape(str(summary.encoding))),
        ("rows", summary.rows_total),
        ("products imported", summary.imported),
        ("new revisions", summary.revisions_new),
        ("unchanged", summary.unchanged),
        ("reverted to an older revision", summary.reverted),
        ("row errors", summary.errors),
        ("row warnings", summary.row_warnings),
    ):
        table.add_row(label, str(value))
    return table


def _progress(path: Path, show: bool) -> tuple[Progress, Callable[[str, int, int], None]]:
    """A byte progress bar on stderr (disabled unless ``show``) and the importer's callback."""
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not show,
    )
    task = bar.add_task(f"reading {path.name}", total=None)

    def progress(phase: str, done: int, total: int) -> None:
        if phase == "read":
            bar.update(task, completed=done, total=total)
        else:
            bar.update(task, description="applying changes")

    return bar, progress


def _print_summary(summary: ImportSummary) -> None:
    for warning in summary.warnings:
        err_console.print(
            f"[yellow]warning:[/] {escape(str(warning))}", highlight=False, soft_wrap=True
        )
    console.print(_table(summary))
    if summary.errors:
        console.print(
            f"{summary.errors} bad rows recorded; see import_row_errors for run {summary.run_id}"
        )


def import_command(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="Shopify export, Google Merchant feed or generic CSV."),
    brand: str = typer.Option(..., "--brand", "-b", help="Brand name (samples/brands/NAME.yaml)."),
    fmt: str = typer.Option("auto", "--format", "-f", help="auto | " + " | ".join(FORMAT_NAMES)),
    encoding: str = typer.Option(
        "auto", "--encoding", help="auto (UTF-8, else cp1252 with a warning) | utf-8 | a codec"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Import a catalog file: products and revisions, bad rows to import_row_errors."""
    from catalog.importing.csv_formats import FORMATS
    from catalog.importing.importer import CatalogImportError, import_catalog
    from pipeline.brand.config import BrandConfigError
    from pipeline.brand.loader import find_brand

    if fmt not in ("auto", *FORMATS):
        fail(f"unknown format {fmt!r}; use auto, {', '.join(FORMATS)}")
    state = cli_state(ctx)
    try:
        brand_cfg = find_brand(state.settings.brands_dir, brand)
    except BrandConfigError as exc:
        fail(str(exc))
    bar, progress = _progress(path, show=not as_json and err_console.is_terminal)
    try:
        with bar:
            summary = import_catalog(
                state.sessionmaker(), path, brand_cfg, fmt, progress, encoding=encoding
            )
    except CatalogImportError as exc:
        if as_json:
            print_json(exc.summary.to_json())
        fail(str(exc))
    if as_json:
        print_json(summary.to_json())
    else:
        _print_summary(summary)
    if summary.error:  # recorded, but not a success: every row failed
        fail(summary.error)
