"""Why a shot failed, as a kind as well as a one-line reason.

The kind is stored beside the free-text reason (``shots.error_kind``), so ``shotline status``
groups failures by kind and a retry can select them (``--kind oom``). Each kind is set in one
place: the phase that meets that failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class FailureKind(StrEnum):
    source_unavailable = "source_unavailable"  # a packshot's source image cannot be used
    cutout_refused = "cutout_refused"  # the product cannot be cut out of it or placed
    model_load = "model_load"  # the model (or its ControlNet / inpaint model) does not load
    lora_incompatible = "lora_incompatible"  # an adapter is missing, unpinned or mismatched
    oom = "oom"  # out of device memory even at batch size 1
    generation = "generation"  # the generator raised on this shot (bad scheduler, NaNs...)
    fidelity = "fidelity"  # the product's own pixels did not survive generation
    storage = "storage"  # a blob the shot needs is missing or does not match its sha256
    duplicate = "duplicate"  # the identical image is already published by another shot
    rendition = "rendition"  # a channel's rendition cannot be made (max_bytes, the mark lost)
    worker_lost = "worker_lost"  # the worker died on this shot too often
    internal = "internal"  # anything else: a bug of ours


@dataclass(frozen=True)
class Failure:
    """One shot's failure: what kind, and the one line a user reads."""

    kind: FailureKind
    reason: str


def kind_of(exc: BaseException) -> FailureKind:
    """The kind of a stage error raised while generating a batch."""
    from pipeline.generate.lora import LoraError  # torch-free modules
    from pipeline.generate.modelspec import ModelLoadError

    if isinstance(exc, LoraError):
        return FailureKind.lora_incompatible
    if isinstance(exc, ModelLoadError):
        return FailureKind.model_load
    if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda's, without importing torch
        return FailureKind.oom
    if isinstance(exc, ValueError | RuntimeError):
        return FailureKind.generation
    return FailureKind.internal
