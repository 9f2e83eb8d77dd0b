"""The root Typer app. Command groups live in sibling modules and register on it.

Its callback runs first in every invocation: it reads the settings from the environment once
and hands them to the command through ``typer.Context.obj`` (a ``CliState``).
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

import typer

from tasks.cli.catalog import (
    brands_cmd,
    export_cmd,
    import_cmd,
    lineage_cmd,
    matte_cmd,
    plan_cmd,
    recall_cmd,
    renditions_cmd,
    reproduce_cmd,
    sources_cmd,
)
from tasks.cli.common import CliState, fail
from tasks.cli.fleet import db_cmd, doctor_cmd, run_cmd, status_cmd, worker_cmd
from tasks.cli.quality import calibrate_cmd, gate_cmd, review_cmd, verify_cmd
from tasks.cli.training import lora_cmd

if TYPE_CHECKING:
    from pipeline.settings import Settings

app = typer.Typer(
    name="shotline",
    help="Batch production line for e-commerce catalog images.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# One module per command (or command group); ``shotline --help`` lists them in this order.
app.command("plan")(plan_cmd.plan)
app.command("lineage")(lineage_cmd.lineage)
app.command("verify")(verify_cmd.verify)
app.command("calibrate")(calibrate_cmd.calibrate)
app.command("import")(import_cmd.import_command)
app.command("reproduce")(reproduce_cmd.reproduce)
app.command("recall")(recall_cmd.recall_command)
app.command("run")(run_cmd.run)
app.command("status")(status_cmd.status)
app.command("worker")(worker_cmd.worker)
app.command("doctor")(doctor_cmd.doctor)
app.add_typer(brands_cmd.brands_app, name="brands")
app.add_typer(db_cmd.db_app, name="db")
app.add_typer(review_cmd.review_app, name="review")
app.add_typer(sources_cmd.sources_app, name="sources")
app.add_typer(matte_cmd.matte_app, name="matte")
app.add_typer(lora_cmd.lora_app, name="lora")
app.add_typer(gate_cmd.gate_app, name="gate")
app.add_typer(export_cmd.export_app, name="export")
app.add_typer(renditions_cmd.renditions_app, name="renditions")


@app.callback()
def _start(ctx: typer.Context) -> None:
    from pipeline.settings import SettingsInvalid, load_settings

    try:
        settings = load_settings()
    except SettingsInvalid as exc:  # one line naming the variable, never pydantic's report
        fail(f"bad setting: {exc}")
    _configure_logging(settings)
    state = CliState(settings)
    ctx.obj = state
    ctx.call_on_close(state.close)


class LiveStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes each record to ``sys.stderr`` as it is *now*, not as it was at start-up.

    While a rich progress bar is live it swaps ``sys.stderr`` for a proxy that prints through
    the bar's console, above the bar; a handler holding the original stream would write
    through the bar and break it (the same trick as logging's last-resort handler)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def _configure_logging(cfg: Settings) -> None:
    """Our own loggers go to stderr (WARNING, or SHOTLINE_LOG_LEVEL when set); stdout stays for
    results and JSON.

    Third-party loggers keep Python's default (warnings only), so the CLI stays readable.
    """
    # The CLI prints its own results; our INFO logs would repeat them. Workers log at INFO.
    chosen = cfg.log_level if "log_level" in cfg.model_fields_set else "WARNING"
    level = getattr(logging, chosen.upper(), logging.WARNING)
    # basicConfig leaves the root at WARNING (and does nothing if handlers already exist);
    # only our packages are lowered, their records reach the root handler by propagation.
    handler = LiveStderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(handlers=[handler])
    for name in ("catalog", "pipeline", "tasks"):
        logging.getLogger(name).setLevel(level)
