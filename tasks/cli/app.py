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
    """Our own loggers go to stderr (WARNING, or SHOTLINE_LOG_LEVEL when set); stdout stays for
    results and JSON.

    Third-party loggers keep Python's default (warnings only), so the CLI stays readable.
    """
    cfg = get_settings()
    # The CLI prints its own results; our INFO logs would repeat them. Workers log at INFO.
    chosen = cfg.log_level if "log_level" in cfg.model_fields_set else "WARNING"
    level = getattr(logging, chosen.upper(), logging.WARNING)
    # basicConfig leaves the root at WARNING (and does nothing if handlers already exist);
    # only our packages are lowered, their records reach the root handler by propagation.
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    for name in ("catalog", "pipeline", "tasks"):
        logging.getLogger(name).setLevel(level)
