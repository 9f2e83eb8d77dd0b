"""Failure kinds: each stage error maps to the kind status groups and retries select."""

from __future__ import annotations

import pytest

from pipeline.failures import FailureKind, kind_of
from pipeline.generate.lora import LoraError
from pipeline.generate.modelspec import ModelLoadError


class OutOfMemoryError(RuntimeError):
    """Named like torch.cuda's (matched by name: no torch import on the cpu queue)."""


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (LoraError("LoRA 'x': sha256 does not match its pin"), FailureKind.lora_incompatible),
        (ModelLoadError("m.safetensors: checkpoint file not found"), FailureKind.model_load),
        (OutOfMemoryError("CUDA out of memory"), FailureKind.oom),
        (ValueError("unknown scheduler 'nope'"), FailureKind.generation),
        (RuntimeError("NaN in latents"), FailureKind.generation),
        (KeyError("bug"), FailureKind.internal),
    ],
)
def test_kind_of(exc: BaseException, kind: FailureKind) -> None:
    assert kind_of(exc) is kind


def test_kinds_are_stable_strings() -> None:
    # Stored in shots.error_kind and used on the command line: renaming one is a migration.
    assert {k.value for k in FailureKind} == {
        "source_unavailable",
        "cutout_refused",
        "model_load",
        "lora_incompatible",
        "oom",
        "generation",
        "fidelity",
        "storage",
        "duplicate",
        "rendition",
        "worker_lost",
        "internal",
    }
