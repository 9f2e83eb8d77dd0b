"""The root Typer app. Command groups live in sibling modules and register on it."""

from __future__ import annotations

import logging

import typer

from pipeline.settings import get_settings

app = typer.Typer(
    name="shotline",
    help="Batch production line for e-commerce catalog images.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _configure_logging() -> None:
    """Our own loggers go to stderr at SHOTLINE_LOG_LEVEL; stdout stays for results and JSON.

    Third-party loggers keep Python's default (warnings only), so the CLI stays readable.
    """
    level = getattr(logging, get_settings().log_level.upper(), logging.INFO)
    # basicConfig leaves the root at WARNING (and does nothing if handlers already exist);
    # only our packages are lowered, their records reach the root handler by propagation.
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    for name in ("catalog", "pipeline", "tasks"):
        logging.getLogger(name).setLevel(level)
