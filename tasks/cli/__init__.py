"""The ``shotline`` command line (Typer + rich)."""

from __future__ import annotations

from rich.markup import escape
from sqlalchemy.exc import DBAPIError

from tasks.cli.app import app
from tasks.cli.common import describe_db_error, err_console


def main() -> None:
    # Any command may meet an unreachable or unmigrated database: one line and exit 2,
    # never a traceback (commands may still catch it themselves for a sharper message).
    try:
        app()
    except DBAPIError as exc:
        err_console.print(f"[bold red]error:[/] {escape(describe_db_error(exc))}", highlight=False)
        raise SystemExit(2) from None


__all__ = ["app", "main"]
