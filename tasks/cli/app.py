"""The root Typer app. Command groups live in sibling modules and register on it."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="shotline",
    help="Batch production line for e-commerce catalog images.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
