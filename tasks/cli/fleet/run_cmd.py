"""``shotline run``: every planned shot through generate -> gate.

In-process when no broker is configured (the embedded default), else on the Celery fleet,
followed from the database.

One exit rule, for people and for cron: 0 when every shot finished without failing; 1 when
any shot failed or the run stopped following before every shot finished; 2 for bad input and
when every shot failed (a model or config that cannot work). ``--allow-failures`` lets failed
shots alone exit 0 (a nightly job that reports failures elsewhere), but never an all-failed run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from tasks.cli.common import (
    COUNT_MAX,
    CliState,
    cli_state,
    console,
    err_console,
    fail,
    print_json,
)
from tasks.output import styled

if TYPE_CHECKING:
    from tasks.runner import RunSummary


def _require_brand(state: CliState, brand: str) -> None:
    from catalog.brands import get_brand

    with state.session() as s:
        if get_brand(s, brand) is None:
            fail(f"unknown brand {brand!r} (import its catalog first)")


def _warn_model_override(state: CliState, brand: str | None) -> None:
    """Shots pin their model when they are planned, so ``SHOTLINE_MODEL`` set only for ``run``
    changes nothing: say so instead of running the planned model silently."""
    from catalog.status import planned_models

    wanted = state.settings.model
    if not wanted:
        return
    with state.session() as s:
        pinned = [m for m in planned_models(s, brand) if m != wanted]
    if pinned:
        err_console.print(
            styled(
                ("warning:", "yellow"),
                f" SHOTLINE_MODEL={wanted} is ignored by run: the planned shots pinned "
                f"{', '.join(pinned)} when they were planned (re-plan to change the model)",
            ),
            soft_wrap=True,
        )


def _warn_no_consumers(state: CliState, brand: str | None) -> None:
    """Fleet mode: one line per queue this run sends to that no worker consumes now, before
    anything is sent (otherwise the bar waits at 0 and the rate comes out over zero work)."""
    from catalog.status import planned_models
    from tasks.cli.fleet.fleet_info import missing_consumers, start_hint
    from tasks.queues import QUEUE_CPU, gpu_queue, model_key

    settings = state.settings
    if settings.embedded:
        return
    with state.session() as s:
        models = planned_models(s, brand)
    queues = [gpu_queue(model_key(m)) for m in models]
    if queues and settings.gate_on == "cpu":
        queues.append(QUEUE_CPU)
    for queue in missing_consumers(settings, queues):
        err_console.print(
            styled(
                ("warning:", "yellow"),
                f" no worker consumes {queue}: its shots will wait until one starts "
                f"(`{start_hint(queue)}`)",
            ),
            soft_wrap=True,
        )


def _preload(state: CliState, brand: str | None, show: bool) -> None:
    """Embedded: load the planned models and the gate under a status line before the bar
    appears (loading takes most of a first run; a bar stuck at 0/N says nothing). A model
    that does not load is left to the run, which records the reason on each shot."""
    from catalog.status import planned_models
    from tasks.context import context_for

    settings = state.settings
    if not settings.embedded or not show:
        return
    with state.session() as s:
        models = planned_models(s, brand)
    if not models:
        return
    ctx = context_for(settings)
    for model in models:
        with err_console.status(f"loading model {escape(model)}…"):
            try:
                ctx.generator(model)
            except Exception:  # the run reports it per shot, with the reason
                return
    with err_console.status("loading the gate (CLIP)…"):
        try:
            ctx.gate()
        except Exception:  # same: the gate step reports it
            return


def _exit_code(summary: RunSummary, allow_failures: bool) -> int:
    """The one rule (module docstring): 1 for failed shots unless allowed, 1 when following
    stopped early; an all-failed run is handled before (exit 2)."""
    if not summary.complete:
        return 1
    if summary.counts.get("failed", 0) and not allow_failures:
        return 1
    return 0


def _all_failed(summary: RunSummary) -> str | None:
    """The one line for a run in which every shot failed (bad weights, a broken config)."""
    if not summary.total or summary.counts.get("failed", 0) != summary.total:
        return None
    first = summary.failures[0]["error"] if summary.failures else "see `shotline status`"
    return f"all {summary.total} shot(s) failed; first reason: {first}"


def _print_summary(summary: RunSummary, brand: str | None) -> None:
    if not summary.total:
        console.print("nothing planned" + (f" for {escape(brand)}" if brand else ""))
        return
    counts = ", ".join(f"{k}={v}" for k, v in sorted(summary.counts.items()))
    console.print(
        f"{summary.total} shot(s) in {summary.elapsed_s:.1f}s "
        f"({summary.shots_per_s:.2f}/s, {summary.mode}): {counts}"
    )
    for f in summary.failures[:10]:
        console.print(
            f"[red]failed[/] shot {f['shot_id']} ({f['attempts']}x): {escape(str(f['error']))}"
        )
    if not summary.complete:
        err_console.print(
            styled(
                ("error:", "bold red"),
                " stopped following before every shot finished; `shotline status` shows progress",
            ),
            soft_wrap=True,
        )


def _retry(state: CliState, brand: str | None, kind: str | None, quiet: bool) -> None:
    from pipeline.failures import FailureKind
    from tasks.runner import retry_failed

    kinds = [k.value for k in FailureKind] + ["unknown"]
    if kind is not None and kind not in kinds:
        fail(f"--kind {kind!r}: expected one of {', '.join(kinds)}")
    counts = retry_failed(state.settings, brand, kind)
    if not quiet:
        parts = ", ".join(f"{k} {n}" for k, n in counts.items()) or "none retryable"
        console.print(f"re-queued {sum(counts.values())} failed shot(s): {parts}", markup=False)


def run(
    ctx: typer.Context,
    brand: str | None = typer.Option(None, "--brand", help="Only this brand's shots."),
    limit: int | None = typer.Option(
        None, "--limit", min=1, max=COUNT_MAX, help="At most this many shots."
    ),
    timeout: float | None = typer.Option(
        None, "--timeout", min=1, help="Fleet mode: stop following after this many seconds."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    allow_failures: bool = typer.Option(
        False,
        "--allow-failures",
        help="Exit 0 even when some shots failed (cron); never when every shot failed.",
    ),
    retry: bool = typer.Option(
        False,
        "--retry-failed",
        help="First re-queue failed shots whose cause may be gone (their errors are kept).",
    ),
    kind: str | None = typer.Option(
        None, "--kind", help="With --retry-failed: only failures of this kind (e.g. oom)."
    ),
) -> None:
    """Run planned shots through generate -> gate, with a progress bar and an ETA.

    Exit status: 0 when every shot finished without failing; 1 when any shot failed or
    following stopped early (--timeout); 2 for bad input or when every shot failed.
    --allow-failures: failed shots alone exit 0.
    """
    from pipeline.brand.config import BrandConfigError
    from tasks.runner import run_line

    state = cli_state(ctx)
    if brand:
        _require_brand(state, brand)
    if retry:
        _retry(state, brand, kind, quiet=as_json)
    elif kind is not None:
        fail("--kind selects failures to retry: use it with --retry-failed")
    _warn_model_override(state, brand)
    _warn_no_consumers(state, brand)
    _preload(state, brand, show=not as_json)
    try:
        summary = run_line(
            state.settings, brand=brand, limit=limit, progress=not as_json, timeout_s=timeout
        )
    except BrandConfigError as exc:
        fail(str(exc))
    if as_json:
        print_json(summary.to_json())
    else:
        _print_summary(summary, brand)
    reason = _all_failed(summary)
    if reason is not None:
        fail(reason)
    code = _exit_code(summary, allow_failures)
    if code:
        raise typer.Exit(code)
