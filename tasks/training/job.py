"""One LoRA training job: the training row in, an adapter file and a finished row out.

The body the Celery task runs and the CLI runs in-process. It is safe to run again for the
same row: a done row is returned as it is, and an unfinished one resumes from its latest
checkpoint (``training/<run_key>/checkpoints/`` in the blob store), so a redelivered job
after a ``kill -9`` loses at most ``checkpoint_every`` steps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from catalog.models import Brand, TrainingState
from catalog.training import fail_training, finish_training, get_training, record_progress
from pipeline.storage import sanitize_part
from pipeline.training.checkpoints import CheckpointStore
from pipeline.training.config import TrainConfig
from pipeline.training.dataset import DatasetError, load_dataset
from pipeline.training.trainer import Progress
from pipeline.training.validation import ValidationPrompt
from tasks.context import WorkerContext
from tasks.training.sources import dataset_dir

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 2.0  # progress rows are written at most this often (and at checkpoints)


class TrainingFailed(ValueError):
    """A run that cannot succeed on retry (bad dataset, changed dataset, bad model)."""


def adapter_file(var_dir: Path, name: str, run_key: str) -> Path:
    return Path(var_dir) / "loras" / f"{sanitize_part(name)}-{run_key[:12]}.safetensors"


def work_dir(var_dir: Path, run_key: str) -> Path:
    """The run's scratch folder (its cached latents), kept until the adapter is written."""
    return Path(var_dir) / "training-work" / sanitize_part(run_key)


def device_for(setting: str) -> str:
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _validation(ctx: WorkerContext, brand_id: int | None) -> tuple[str, list[ValidationPrompt]]:
    if brand_id is None:
        return "", []
    with ctx.sessions() as s:
        brand = s.get(Brand, brand_id)
        name, stored = (brand.name, brand.config) if brand else ("", None)
    if not name:
        return "", []
    try:
        cfg = ctx.brand_config(name, stored)
    except ValueError:
        return name, []
    return name, [ValidationPrompt(v.prompt, v.seed) for v in cfg.lora_validation]


def _progress_writer(
    ctx: WorkerContext,
    run_id: int,
    store: CheckpointStore,
    every: int,
    user: Callable[[Progress], None] | None,
) -> Callable[[Progress], None]:
    last = [0.0]

    def on_progress(p: Progress) -> None:
        if user is not None:
            user(p)
        at_checkpoint = p.step % every == 0 or p.step == p.steps
        if not at_checkpoint and time.monotonic() - last[0] < PROGRESS_EVERY_S:
            return
        last[0] = time.monotonic()
        keys = [k for st in store.steps() for k in store.keys(st)] if at_checkpoint else None
        with ctx.sessions() as s, s.begin():
            record_progress(get_training(s, run_id), p.step, p.loss, p.eta_s, keys)

    return on_progress


def _fail(ctx: WorkerContext, run_id: int, reason: str) -> None:
    with ctx.sessions() as s, s.begin():
        fail_training(get_training(s, run_id), reason)


def _start(ctx: WorkerContext, run_id: int) -> dict[str, Any] | None:
    """The row's inputs, with the row marked running; None if it is already done."""
    with ctx.sessions() as s, s.begin():
        row = get_training(s, run_id)
        if row.state == TrainingState.done.value:
            return None
        row.state = TrainingState.running.value
        row.error = None
        return {
            "run_key": row.run_key,
            "name": row.name,
            "trigger": row.trigger_word,
            "source": row.source_uri,
            "digest": row.dataset_digest,
            "base_model": row.base_model,
            "config": TrainConfig.from_json(row.hyperparameters),
            "brand_id": row.brand_id,
        }


def _train(
    ctx: WorkerContext,
    run_id: int,
    dataset_run: tuple[Any, Any, TrainConfig, Path, CheckpointStore],
    validation: list[ValidationPrompt],
    on_progress: Callable[[Progress], None],
    stop_after: int | None,
    banner: str,
    run_key: str,
) -> Any:
    """``run_training`` with the run's work folder; a dataset problem found mid-run (an
    image changed or failing to decode when a step draws it) fails the row."""
    from pipeline.training.run import run_training

    pipe, dataset, cfg, out_path, store = dataset_run
    try:
        return run_training(
            pipe,
            dataset,
            cfg,
            out_path,
            store=store,
            validation=validation,
            on_progress=on_progress,
            device=device_for(ctx.settings.device),
            stop_after=stop_after,
            banner=banner,
            work_dir=work_dir(ctx.settings.var_dir, run_key),
        )
    except DatasetError as exc:
        _fail(ctx, run_id, str(exc))
        raise TrainingFailed(str(exc)) from None


def store_adapter(ctx: WorkerContext, path: Path, sha256: str) -> str:
    """Put the trained adapter in the blob store under its content key (once: the same
    bytes are the same key) and return its ``store://`` URI, which every GPU host of the
    fleet can fetch; the training host's own disk is not shared."""
    from pipeline.digests import sha256_bytes
    from pipeline.generate.lora import adapter_store_key, adapter_store_uri

    key = adapter_store_key(sha256)
    if not ctx.store.exists(key):
        data = path.read_bytes()
        if sha256_bytes(data) != sha256:  # changed on disk since it was hashed
            raise TrainingFailed(f"{path}: the adapter changed after training (sha256)")
        ctx.store.put(key, data, "application/octet-stream")
    return adapter_store_uri(sha256)


def run_job(
    ctx: WorkerContext,
    run_id: int,
    on_progress: Callable[[Progress], None] | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train (or resume) run ``run_id``; returns ``{"state", "sha256", "steps"}``.

    Bad input fails the row with the reason and raises ``TrainingFailed``; anything else
    (a lost database, a full disk) propagates for the task's retry, the row still running.
    """
    from pipeline.generate.modelspec import ModelSpec, load_pipeline, model_digest

    job = _start(ctx, run_id)
    if job is None:
        with ctx.sessions() as s:
            row = get_training(s, run_id)
            return {"state": row.state, "sha256": row.adapter_sha256, "steps": row.steps_done}
    cfg: TrainConfig = job["config"]
    try:
        # Checked (every image decoded) when the run was created; the digest below proves
        # the bytes are the same, so headers suffice and step 1 starts without a full decode.
        source = dataset_dir(ctx.settings, job["source"])
        dataset = load_dataset(source, job["trigger"], decode=False)
        if dataset.digest != job["digest"]:
            raise TrainingFailed(
                f"{job['source']}: the dataset changed since run {run_id} was created "
                f"(digest {dataset.digest[:12]}, recorded {job['digest'][:12]})"
            )
        spec = ModelSpec.parse(job["base_model"], ctx.settings)
        pipe = load_pipeline(spec, ctx.settings)
        base_digest = model_digest(spec, ctx.settings)
    except (DatasetError, TrainingFailed, ValueError) as exc:
        _fail(ctx, run_id, str(exc))
        raise TrainingFailed(str(exc)) from None
    store = CheckpointStore(ctx.store, job["run_key"], keep=cfg.keep_checkpoints)
    done = store.steps()
    if done:
        log.info("training run %s: resuming from step %d", run_id, done[-1])
    brand_name, prompts = _validation(ctx, job["brand_id"])
    out_path = adapter_file(ctx.settings.var_dir, job["name"], job["run_key"])
    out = _train(
        ctx,
        run_id,
        dataset_run=(pipe, dataset, cfg, out_path, store),
        validation=prompts,
        on_progress=_progress_writer(ctx, run_id, store, cfg.checkpoint_every, on_progress),
        stop_after=stop_after,
        banner=f"{brand_name} LoRA {job['name']} (training run {run_id}): with adapter | base",
        run_key=job["run_key"],
    )
    if out.adapter_sha256 is None:
        return {
            "state": TrainingState.running.value,
            "sha256": None,
            "steps": out.result.steps_done,
        }
    sheet_key = None
    if out.sheet_png is not None:
        sheet_key = f"training/{sanitize_part(job['run_key'])}/validation.png"
        ctx.store.put(sheet_key, out.sheet_png, "image/png")
    adapter_uri = store_adapter(ctx, out_path, out.adapter_sha256)
    with ctx.sessions() as s, s.begin():
        finish_training(
            s,
            get_training(s, run_id),
            adapter_sha256=out.adapter_sha256,
            adapter_uri=adapter_uri,
            base_model_digest=base_digest,
            loss_summary=out.result.loss_summary(),
            steps_done=out.result.steps_done,
            validation_key=sheet_key,
        )
    log.info("training run %s done: %s", run_id, out.adapter_sha256)
    return {"state": TrainingState.done.value, "sha256": out.adapter_sha256, "steps": cfg.steps}
