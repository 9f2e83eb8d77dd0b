"""``shotline lora train|status|list|show``: train a brand LoRA and follow its runs."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from tasks.cli.catalog.brands_cmd import report_brand_error
from tasks.cli.common import (
    MAX_ID,
    CliState,
    clean,
    cli_state,
    console,
    err_console,
    fail,
    print_json,
)
from tasks.cli.training.brand_yaml import lora_entry, write_into_brand

if TYPE_CHECKING:
    from pipeline.brand.config import BrandConfig
    from pipeline.training.config import TrainConfig
    from pipeline.training.trainer import Progress as TrainProgress


_RUN_ID = typer.Argument(..., help="Training run id.", min=1, max=MAX_ID)

lora_app = typer.Typer(
    help="Train brand LoRA adapters and follow training runs.", no_args_is_help=True
)


def _brand(state: CliState, ref: str) -> tuple[BrandConfig, Path]:
    from pipeline.brand.config import BrandConfigError
    from pipeline.brand.loader import find_brand, load_brand

    try:
        path = Path(ref)
        cfg = (
            load_brand(path)
            if path.suffix in (".yaml", ".yml")
            else find_brand(state.settings.brands_dir, ref)
        )
    except BrandConfigError as exc:
        report_brand_error(exc)
    if cfg.source_path is None:
        fail(f"{ref}: brand has no file")
    return cfg, cfg.source_path


def _steps_total(state: CliState, run_id: int) -> int | None:
    """The run's planned step count, for the bar's total before the first step reports."""
    from catalog.training import TrainingNotFound, get_training, training_json

    with state.session() as s:
        try:
            total = training_json(get_training(s, run_id)).get("steps_total")
        except TrainingNotFound:
            return None  # run_job says so, with the reason
    return int(total) if total else None


def _run_in_process(state: CliState, run_id: int, quiet: bool) -> dict[str, Any]:
    from tasks.context import context_for
    from tasks.training.job import run_job

    ctx = context_for(state.settings)
    if quiet:
        return run_job(ctx, run_id)
    total = _steps_total(state, run_id)
    columns = (
        TextColumn("training"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} loss {task.fields[loss]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("train", total=total, loss="-")

        def show(p: TrainProgress) -> None:
            bar.update(task, completed=p.step, total=p.steps, loss=f"{p.loss:.4f}")

        return run_job(ctx, run_id, on_progress=show)


def _warn_no_consumer(state: CliState, base_model: str) -> None:
    """One line, before queueing, when no worker consumes the run's train.<model> queue."""
    from tasks.cli.fleet.fleet_info import missing_consumers, start_hint
    from tasks.queues import model_key, train_queue

    queue = train_queue(model_key(base_model))
    if missing_consumers(state.settings, [queue]):
        err_console.print(
            f"warning: no worker consumes {queue}: the run waits until one starts "
            f"(`{start_hint(queue)}`)",
            markup=False,
            soft_wrap=True,
        )


def _config(**kw: Any) -> TrainConfig:
    from pipeline.training.config import TrainConfig

    try:
        return TrainConfig(**kw)
    except ValueError as exc:
        fail(escape(str(exc)))


def _check_name(name: str) -> None:
    """The adapter name must be a valid loras[].name: checked before training, not after."""
    from pipeline.brand.config import LoraSpec

    metadata = LoraSpec.model_fields["name"].metadata
    pattern = str(next((m.pattern for m in metadata if hasattr(m, "pattern")), ""))
    if pattern and not re.match(pattern, name):
        fail(
            f"--name {name!r}: an adapter name is letters, digits, '_', '.' and "
            "'-', starting with a letter or digit, at most 100 characters"
        )


def adapter_location(uri: str, brand_file: Path) -> str:
    """What the brand's ``path:`` says for a trained adapter: its ``store://`` URI (every
    host fetches it from the blob store), or a local file relative to the brand file."""
    from urllib.parse import unquote, urlparse

    if urlparse(uri).scheme != "file":
        return uri
    local = Path(unquote(urlparse(uri).path))
    try:
        return os.path.relpath(local, brand_file.resolve().parent)
    except ValueError:  # another drive: no relative path exists
        return str(local)


def _finish(state: CliState, run_id: int, brand_file: Path, write_brand: bool) -> None:
    from catalog.training import get_training, training_json
    from pipeline.brand.config import BrandConfigError

    with state.session() as s:
        row = get_training(s, run_id)
        info = training_json(row)
    adapter = info["adapter"]
    path = adapter_location(adapter["uri"], brand_file)
    entry = lora_entry(
        info["name"], path, adapter["sha256"], info["trigger_word"], run_id, info["dataset_digest"]
    )
    console.print(f"run {run_id}: adapter {clean(path)} sha256 {adapter['sha256']}", markup=False)
    if write_brand:
        try:
            write_into_brand(brand_file, entry)
        except BrandConfigError as exc:
            report_brand_error(exc)
        console.print(f"added {clean(info['name'])} to {clean(brand_file)}", markup=False)
    else:
        console.print("add to the brand's loras:", markup=False)
        # One print per line: the console shows a newline inside a string as a visible
        # escape (control characters are never printed raw).
        for line in entry.splitlines():
            console.print(line, markup=False, highlight=False, soft_wrap=True)


@lora_app.command("train")
def train(
    ctx: typer.Context,
    brand: str = typer.Option(..., "--brand", help="Brand name or YAML file."),
    images: str = typer.Option("", "--images", help="Folder of training images (+ captions)."),
    name: str = typer.Option("", "--name", help="Adapter name (a loras[].name)."),
    trigger: str = typer.Option("", "--trigger", help="Trigger word, prepended to captions."),
    rank: int = typer.Option(16, "--rank"),
    alpha: float = typer.Option(16.0, "--alpha"),
    steps: int = typer.Option(1000, "--steps"),
    lr: float = typer.Option(1e-4, "--lr"),
    resolution: int = typer.Option(512, "--resolution"),
    batch_size: int = typer.Option(1, "--batch-size"),
    text_encoder: bool = typer.Option(
        False, "--text-encoder", help="Train a text-encoder LoRA too."
    ),
    seed: int = typer.Option(0, "--seed"),
    checkpoint_every: int = typer.Option(100, "--checkpoint-every"),
    resume: int = typer.Option(
        0,
        "--resume",
        help="Resume training run RUN from its latest checkpoint.",
        min=0,
        max=MAX_ID,
    ),
    write_brand: bool = typer.Option(
        False, "--write-brand", help="Add the pinned adapter to the brand YAML."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Train a LoRA on a folder of brand images (in-process without a broker, else queued)."""
    from catalog.training import TrainingNotFound, get_training
    from tasks.training.job import TrainingFailed
    from tasks.training.task import enqueue_training

    state = cli_state(ctx)
    cfg, brand_file = _brand(state, brand)
    if resume:
        run_id = resume
    else:
        if not (images and name and trigger):
            fail("--images, --name and --trigger are required (or --resume RUN)")
        _check_name(name)
        config = _config(
            rank=rank,
            alpha=alpha,
            steps=steps,
            lr=lr,
            resolution=resolution,
            batch_size=batch_size,
            text_encoder=text_encoder,
            seed=seed,
            checkpoint_every=checkpoint_every,
        )
        run_id = _new_run(state, cfg, images, name, trigger, config)
    if not state.settings.embedded:
        with state.session() as s:
            base = get_training(s, run_id).base_model
        _warn_no_consumer(state, base)
        queue = enqueue_training(state.settings, run_id, base)
        console.print(
            f"training run {run_id} queued on {queue}; "
            f"follow it with `shotline lora status {run_id}`",
            markup=False,
        )
        return
    try:
        result = _run_in_process(state, run_id, quiet=as_json)
    except TrainingNotFound as exc:
        fail(escape(str(exc)))
    except TrainingFailed as exc:
        fail(escape(f"training run {run_id} failed: {exc}"))
    if as_json:
        print_json({"run": run_id, **result})
        return
    _finish(state, run_id, brand_file, write_brand)


def _new_run(
    state: CliState, cfg: BrandConfig, images: str, name: str, trigger: str, config: TrainConfig
) -> int:
    """A new training run of ``images`` (its dataset checked); its problems exit 2."""
    from pipeline.training.dataset import DatasetError
    from tasks.context import context_for
    from tasks.training.runs import new_run

    try:
        run_id, dataset = new_run(context_for(state.settings), cfg, images, name, trigger, config)
    except DatasetError as exc:
        for line in exc.problems:
            err_console.print(f"error: {line}", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    for warning in dataset.warnings:
        err_console.print(f"warning: {warning}", markup=False, soft_wrap=True)
    return run_id


def _row(state: CliState, run_id: int) -> dict[str, Any]:
    from catalog.training import TrainingNotFound, get_training, training_json

    with state.session() as s:
        try:
            return training_json(get_training(s, run_id))
        except TrainingNotFound as exc:
            fail(escape(str(exc)))


@lora_app.command("status")
def status(ctx: typer.Context, run_id: int = _RUN_ID) -> None:
    """One line: state, step, loss, ETA."""
    info = _row(cli_state(ctx), run_id)
    prog = info["progress"] or {}
    eta = prog.get("eta_s")
    done, total = info["steps_done"], info["steps_total"]
    line = f"run {run_id} {info['name']}: {info['state']} step {done}/{total}"
    if prog.get("loss") is not None:
        line += f" loss {prog['loss']:.4f}"
    if eta is not None and info["state"] == "running":
        line += f" eta {eta:.0f}s"
    if info["error"]:
        line += f" error: {info['error']}"
    console.print(clean(line), markup=False)


@lora_app.command("show")
def show(ctx: typer.Context, run_id: int = _RUN_ID) -> None:
    """Everything recorded about a run, as JSON."""
    print_json(_row(cli_state(ctx), run_id))


@lora_app.command("list")
def list_runs(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Every training run."""
    from catalog.training import list_trainings, training_json

    state = cli_state(ctx)
    with state.session() as s:
        rows = [training_json(r) for r in list_trainings(s)]
    if as_json:
        print_json(rows)
        return
    for r in rows:
        sha = (r["adapter"] or {}).get("sha256") or "-"
        console.print(
            clean(
                f"{r['id']:>5} {r['name']:<24} {r['state']:<8} "
                f"{r['steps_done']}/{r['steps_total']} {sha[:16]}"
            ),
            markup=False,
        )
