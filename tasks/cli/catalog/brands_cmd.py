"""``shotline brands check FILE`` and ``shotline brands list``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.markup import escape
from rich.table import Table

from tasks.cli.common import cli_state, console, err_console

if TYPE_CHECKING:
    from pipeline.brand.config import BrandConfig, BrandConfigError
    from pipeline.generate.lora_check import AdapterCheck
    from pipeline.settings import Settings


brands_app = typer.Typer(help="Brand configs (samples/brands/*.yaml).", no_args_is_help=True)


def report_brand_error(exc: BrandConfigError) -> NoReturn:
    """One line per problem (``file:line: field: message``), never wrapped, then exit 2."""
    for line in exc.lines():
        err_console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def lora_checks(file: Path, cfg: BrandConfig, settings: Settings) -> list[AdapterCheck]:
    """The brand's adapters against the model it runs on (the settings' model, else the
    brand's ``base_model``): ``BrandConfigError`` with one line per refused adapter."""
    from pipeline.brand.loader import located_error
    from pipeline.generate.lora_check import check_brand_loras
    from pipeline.generate.modelspec import ModelLoadError

    model_id = settings.model or cfg.resolved_base_model()
    try:
        checks = check_brand_loras(cfg, model_id, settings)
    except ModelLoadError as exc:
        raise located_error(file, [(("base_model",), f"model {exc}")]) from None
    refused = [(("loras", c.index, "path"), c.refusal) for c in checks if c.refusal]
    if refused:
        raise located_error(file, refused)
    return checks


@brands_app.command("check")
def check(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="A brand YAML file."),
    hash_files: bool = typer.Option(
        True,
        "--hash/--no-hash",
        help="Check local LoRA files against their sha256 pins (headers are always checked).",
    ),
) -> None:
    """Validate a brand file: exit 0 and print ok, or exit 2 with one line per problem."""
    from pipeline.brand.config import BrandConfigError
    from pipeline.brand.loader import brand_warnings, load_brand, located_error

    try:
        cfg = load_brand(file)
        pins = cfg.pin_problems(hashes=hash_files)
        if pins:
            raise located_error(file, pins)
        checks = lora_checks(file, cfg, cli_state(ctx).settings)
    except BrandConfigError as exc:
        report_brand_error(exc)
    for w in brand_warnings(cfg):
        err_console.print(f"[yellow]warning:[/] {escape(f'{file}: {w}')}", soft_wrap=True)
    console.print(
        f"ok: {escape(str(file))} (brand {escape(cfg.name)}, {len(cfg.templates)} templates, "
        f"{len(cfg.loras)} LoRAs, digest {cfg.digest()[:12]})",
        highlight=False,
        soft_wrap=True,
    )
    for c in checks:
        if c.report is not None:
            console.print(
                f"LoRA {escape(c.name)}: {escape(c.report.summary())}",
                highlight=False,
                soft_wrap=True,
            )


@brands_app.command("list")
def list_brands(ctx: typer.Context) -> None:
    """The brand files in the brands folder and whether each one is valid."""
    from pipeline.brand.config import BrandConfigError
    from pipeline.brand.loader import load_brand

    folder = cli_state(ctx).settings.brands_dir
    table = Table("brand", "file", "templates", "status")
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        try:
            cfg = load_brand(path)
        except BrandConfigError as exc:
            table.add_row(
                escape(path.stem), escape(str(path)), "-", f"[red]{len(exc.problems)} problem(s)[/]"
            )
            continue
        table.add_row(
            escape(cfg.name), escape(str(path)), escape(", ".join(cfg.templates)), "[green]ok[/]"
        )
    console.print(table)
