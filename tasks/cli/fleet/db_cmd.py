"""``shotline db upgrade|check``."""

from __future__ import annotations

import typer

from catalog import migrate
from tasks.cli.common import cli_state, console

db_app = typer.Typer(help="Database schema (Alembic).", no_args_is_help=True)


@db_app.command("upgrade")
def upgrade(ctx: typer.Context, revision: str = typer.Argument("head")) -> None:
    """Apply the migrations up to REVISION (default: head)."""
    migrate.upgrade(cli_state(ctx).settings.database_url, revision)
    console.print(f"database at [bold]{revision}[/]")


@db_app.command("check")
def check(ctx: typer.Context) -> None:
    """Fail when the models and the migrations have drifted apart."""
    migrate.check(cli_state(ctx).settings.database_url)
    console.print("no drift")
