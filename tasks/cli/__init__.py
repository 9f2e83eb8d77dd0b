"""The ``shotline`` command line (Typer + rich)."""

from __future__ import annotations

# Importing the modules registers their commands on ``app``.
from tasks.cli import (  # noqa: F401
    brands_cmd,
    db_cmd,
    gate_cmd,
    import_cmd,
    lineage_cmd,
    reproduce_cmd,
    review_cmd,
    run_cmd,
)
from tasks.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
