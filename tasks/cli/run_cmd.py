"""``shotline run``, ``shotline status`` and ``shotline worker``.

``run`` pushes every planned shot through generate -> gate: in-process when no broker is
configured (the embedded default), else on the Celery fleet, followed from the database.
"""

from __future__ import annotations

import os
import shutil
import sys

import typer
from rich.table import Table

from catalog.status import status_report
from tasks.cli.app import app
from tasks.cli.common import console, fail, print_json, session, settings


@app.command("run")
def run_cmd(
    brand: str | None = typer.Option(None, "--brand", help="Only this brand's shots."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="At most this many shots."),
    timeout: float | None = typer.Option(
        None, "--timeout", min=1, help="Fleet mode: stop following after this many seconds."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Run planned shots through generate -> gate, with a progress bar and an ETA."""
    from pipeline.brand.config import BrandConfigError
    from tasks.runner import run_line

    cfg = settings()
    if brand:
        with session() as s:
            from catalog.brands import get_brand

            if get_brand(s, brand) is None:
                fail(f"unknown brand {brand!r} (import its catalog first)")
    try:
        summary = run_line(cfg, brand=brand, limit=limit, progress=not as_json, timeout_s=timeout)
    except BrandConfigError as exc:
        fail(str(exc))
    if as_json:
        print_json(summary.to_json())
        return
    if not summary.total:
        console.print("nothing planned" + (f" for {brand}" if brand else ""))
        return
    counts = ", ".join(f"{k}={v}" for k, v in sorted(summary.counts.items()))
    console.print(
        f"{summary.total} shot(s) in {summary.elapsed_s:.1f}s "
        f"({summary.shots_per_s:.2f}/s, {summary.mode}): {counts}"
    )
    for f in summary.failures[:10]:
        console.print(f"[red]failed[/] shot {f['shot_id']} ({f['attempts']}x): {f['error']}")
    if not summary.complete:
        fail("stopped following before every shot finished; `shotline status` shows progress", 1)


@app.command("status")
def status_cmd(
    brand: str | None = typer.Option(None, "--brand", help="Only this brand."),
    minutes: int = typer.Option(5, "--minutes", min=1, help="Throughput window."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Counts by state, throughput over the last minutes, and failures with their reasons."""
    with session() as s:
        report = status_report(s, brand=brand, minutes=minutes)
    if as_json:
        print_json(report)
        return
    table = Table(title="shots by state" + (f" ({brand})" if brand else ""))
    table.add_column("state")
    table.add_column("count", justify="right")
    for state, n in report["counts"].items():
        table.add_row(state, str(n))
    table.add_row("[bold]total[/]", f"[bold]{report['total']}[/]")
    console.print(table)
    tp = report["throughput"]
    console.print(
        f"last {tp['window_minutes']} min: generated {tp['generated']} "
        f"({tp['generated_per_min']}/min), gated {tp['gated']}, published {tp['published']}"
    )
    for f in report["failures"]:
        console.print(
            f"[red]failed[/] shot {f['shot_id']} after {f['attempts']} attempt(s): {f['error']}",
            highlight=False,
        )


@app.command("worker")
def worker_cmd(
    gpu: str | None = typer.Option(
        None, "--gpu", help="Serve gpu.<MODEL-KEY> (e.g. tiny) with the solo pool."
    ),
    cpu: bool = typer.Option(False, "--cpu", help="Serve the cpu and ingest queues."),
    concurrency: int = typer.Option(1, "--concurrency", "-c", min=1, help="CPU processes."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the celery command only."),
) -> None:
    """Start a Celery worker (a thin wrapper over `celery -A tasks.celery_app worker`).

    GPU workers use `--pool solo`: CUDA does not survive fork. Run one per GPU, pinned with
    CUDA_VISIBLE_DEVICES. CPU workers (gate, publish, import) may use prefork.
    """
    if bool(gpu) == cpu:
        fail("give exactly one of --gpu MODEL-KEY or --cpu")
    if settings().embedded:
        fail("no broker configured: set SHOTLINE_BROKER_URL (redis://...) to run workers")
    celery = shutil.which("celery", path=os.path.dirname(sys.executable)) or "celery"
    args = [celery, "-A", "tasks.celery_app", "worker", "-l", "INFO"]
    if gpu:
        args += ["-Q", f"gpu.{gpu}", "--pool", "solo"]
    else:
        args += ["-Q", "cpu,ingest", "--pool", "prefork", "-c", str(concurrency)]
    if dry_run:
        console.print(" ".join(args), highlight=False, soft_wrap=True)
        return
    os.execv(args[0], args)  # the worker takes over this process (signals, exit code)
