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
    model_load = "model_load"  # a model (ControlNet, inpaint, CLIP, Open-NSFW too) does not load
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
    from pipeline.gate.policy import GateModelError  # torch-free modules
    from pipeline.generate.lora import LoraError
    from pipeline.generate.modelspec import ModelLoadError

    if isinstance(exc, LoraError):
        return FailureKind.lora_incompatible
    if isinstance(exc, ModelLoadError | GateModelError):
        return FailureKind.model_load
    if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda's, without importing torch
        return FailureKind.oom
    if isinstance(exc, ValueError | RuntimeError):
        return FailureKind.generation
    return FailureKind.internal


# Failures that the same input will meet again on every try: a model or adapter that does not
# load (missing file, wrong format, incompatible shapes). Retrying only reloads the same file,
# so the shot fails at its first attempt. Every other kind (OOM, storage, generation, lost
# workers) keeps its retries: the next try may be on another host or a quieter GPU.
PERMANENT_KINDS: frozenset[FailureKind] = frozenset(
    {FailureKind.model_load, FailureKind.lora_incompatible}
)

# A reason is read on one line of ``shotline status``; loader errors can be kilobytes of key
# sets, so they are cut (the file is named first, so it survives the cut).
MAX_REASON_CHARS = 300


def is_permanent(kind: FailureKind | str | None) -> bool:
    """Whether a failure of ``kind`` would recur on every retry (so it is not retried)."""
    return kind is not None and str(kind) in {k.value for k in PERMANENT_KINDS}


def one_line(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """``text`` on one line (runs of whitespace and control characters become one space),
    at most ``limit`` characters (cut with an ellipsis)."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def failure_of(exc: BaseException, named: bool = False) -> Failure:
    """A stage error as a failure: its kind and a one-line reason (``named``: prefixed with
    the exception type, except for load errors, whose message names the file first)."""
    kind = kind_of(exc)
    text = str(exc) or type(exc).__name__
    if named and not is_permanent(kind):
        text = f"{type(exc).__name__}: {text}"
    return Failure(kind, one_line(text))
