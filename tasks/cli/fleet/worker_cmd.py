"""``shotline worker``: a thin wrapper over ``celery -A tasks.celery_app worker``."""

from __future__ import annotations

import os
import shutil
import sys

import typer

from tasks.cli.common import cli_state, console, fail


def node_name(queues: list[str], pid: int) -> str:
    """``<queues>-<pid>@%h``: unique per process on a host (two workers with one name collide:
    Celery warns, and inspect and remote control see only one of them). The pid is this
    process's, which ``execv`` hands to the worker."""
    label = "+".join(q.replace(".", "-") for q in queues)
    return f"{label}-{pid}@%h"


def _celery_args(gpu: str | None, concurrency: int, train: str | None = None) -> list[str]:
    celery = shutil.which("celery", path=os.path.dirname(sys.executable)) or "celery"
    if gpu or train:
        # A worker serves generation or training; both only when asked for both.
        queues = ([f"gpu.{gpu}"] if gpu else []) + ([f"train.{train}"] if train else [])
        pool = ["--pool", "solo"]
    else:
        queues = ["cpu", "ingest"]
        pool = ["--pool", "prefork", "-c", str(concurrency)]
    # -E: task events on (Flower and `celery events` need them; the README promises them).
    args = [celery, "-A", "tasks.celery_app", "worker", "-l", "INFO", "-E"]
    return [*args, "-n", node_name(queues, os.getpid()), "-Q", ",".join(queues), *pool]


def worker(
    ctx: typer.Context,
    gpu: str | None = typer.Option(
        None, "--gpu", help="Serve gpu.<MODEL-KEY> (e.g. tiny) with the solo pool."
    ),
    train: str | None = typer.Option(
        None, "--train", help="Serve train.<MODEL-KEY> (LoRA training); with --gpu, both."
    ),
    cpu: bool = typer.Option(False, "--cpu", help="Serve the cpu and ingest queues."),
    concurrency: int = typer.Option(
        1, "--concurrency", "-c", min=1, max=512, help="CPU processes."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the celery command only."),
) -> None:
    """Start a Celery worker (a thin wrapper over `celery -A tasks.celery_app worker`).

    GPU workers use `--pool solo`: CUDA does not survive fork. Run one per GPU, pinned with
    CUDA_VISIBLE_DEVICES. CPU workers (gate, publish, import) may use prefork.
    """
    if bool(gpu or train) == cpu:
        fail("give --gpu MODEL-KEY and/or --train MODEL-KEY, or --cpu")
    if cli_state(ctx).settings.embedded:
        fail("no broker configured: set SHOTLINE_BROKER_URL (redis://...) to run workers")
    args = _celery_args(gpu, concurrency, train)
    if dry_run:
        console.print(" ".join(args), highlight=False, soft_wrap=True)
        return
    os.execv(args[0], args)  # the worker takes over this process (signals, exit code)
