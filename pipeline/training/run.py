"""One training run end to end, as a pure function: dataset in, adapter file and report out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.training.checkpoints import CheckpointStore
from pipeline.training.config import TrainConfig
from pipeline.training.dataset import Dataset, prepare
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
) -> RunOutput:
    """Train on ``dataset``; write the adapter to ``out_path`` once all steps are done.

    ``stop_after`` ends early (no adapter is written): tests use it to stand for a crash.
    """
    trainer = LoraTrainer(pipe, config, device=device)
    trainer.cache(
        prepare(dataset.images, config.resolution, config.buckets),
        [i.caption for i in dataset.images],
    )
    result = train(trainer, store, resume=resume, on_progress=on_progress, stop_after=stop_after)
    out = RunOutput(result, warnings=list(dataset.warnings))
    if result.steps_done < config.steps:
        return out
    out.adapter_sha256 = save_adapter(trainer, out_path)
    out.adapter_path = out_path
    if validation:
        renders = render_validation(
            pipe, validation, config.resolution, text_encoder=config.text_encoder
        )
        out.sheet_png = validation_sheet(renders, banner or f"validation: {out_path.name}")
    return out
