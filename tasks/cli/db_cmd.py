"""``shotline db upgrade|check``."""

from __future__ import annotations

import typer

from catalog import migrate
from tasks.cli.app import app
from tasks.cli.common import console, settings

db_app = typer.Typer(help="Database schema (Alembic).", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def upgrade(revision: str = typer.Argument("head")) -> None:
    """Apply the migrations up to REVISION (default: head)."""
    migrate.upgrade(settings().database_url, revision)
    console.print(f"database at [bold]{revision}[/]")


@db_app.command("check")
def check() -> None:
    """Fail when the models and the migrations have drifted apart."""
    migrate.check(settings().database_url)
    console.print("no drift")
