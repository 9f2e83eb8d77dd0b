"""One training run end to end, as a pure function: dataset in, adapter file and report out."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.training.checkpoints import CheckpointStore
from pipeline.training.config import TrainConfig
from pipeline.training.dataset import Dataset, prepare_one, target_size
from pipeline.training.latents import LatentCache
from pipeline.training.output import save_adapter
from pipeline.training.trainer import LoraTrainer, Progress, TrainResult, train
from pipeline.training.validation import ValidationPrompt, render_validation, validation_sheet


@dataclass
class RunOutput:
    result: TrainResult
    adapter_path: Path | None = None
    adapter_sha256: str | None = None
    sheet_png: bytes | None = None
    warnings: list[str] = field(default_factory=list)


def run_training(
    pipe: Any,
    dataset: Dataset,
    config: TrainConfig,
    out_path: Path,
    store: CheckpointStore | None = None,
    resume: bool = True,
    validation: Sequence[ValidationPrompt] = (),
    on_progress: Callable[[Progress], None] | None = None,
    device: str = "cpu",
    stop_after: int | None = None,
    banner: str = "",
    work_dir: Path | None = None,
) -> RunOutput:
    """Train on ``dataset``; write the adapter to ``out_path`` once all steps are done.

    Images are decoded and encoded as steps draw them; their latents are cached in
    ``work_dir/latents`` (kept while the run is unfinished, so a resumed run reuses them;
    removed once the adapter is written). Without ``work_dir`` a temp folder is used.
    ``stop_after`` ends early (no adapter is written): tests use it to stand for a crash.
    ``DatasetError`` if a file changed or fails to decode when a step draws it.
    """
    with contextlib.ExitStack() as stack:
        if work_dir is None:
            work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lora-")))
        trainer = LoraTrainer(pipe, config, device=device)
        _stream(trainer, dataset, config, Path(work_dir) / "latents")
        result = train(
            trainer, store, resume=resume, on_progress=on_progress, stop_after=stop_after
        )
        out = RunOutput(result, warnings=list(dataset.warnings))
        if result.steps_done < config.steps:
            return out
        out.adapter_sha256 = save_adapter(trainer, out_path)
        shutil.rmtree(Path(work_dir) / "latents", ignore_errors=True)
    out.adapter_path = out_path
    if validation:
        renders = render_validation(
            pipe, validation, config.resolution, text_encoder=config.text_encoder
        )
        out.sheet_png = validation_sheet(renders, banner or f"validation: {out_path.name}")
    return out


def _stream(trainer: LoraTrainer, dataset: Dataset, config: TrainConfig, cache: Path) -> None:
    """Point ``trainer`` at ``dataset``'s files: decoded and encoded only when drawn."""
    items = dataset.images
    res, buckets = config.resolution, config.buckets
    sizes = [target_size(i, res, buckets) for i in items]
    trainer.stream(
        sizes,
        # The file's sha256 and its training size determine its latent (for one model).
        [f"{i.sha256}-{w}x{h}" for i, (w, h) in zip(items, sizes, strict=True)],
        lambda k: prepare_one(items[k], res, buckets),
        [i.caption for i in items],
        LatentCache(cache),
    )
