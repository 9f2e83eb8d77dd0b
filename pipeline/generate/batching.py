"""The one place GPU batches are formed: pure, over shot parameters.

A GPU batch shares everything a denoising call shares: the model (a packshot shot's brand
inpaint model where it names one), packshot-ness (inpainting vs text-to-image), the ControlNet
and the shot parameters' own ``batch_key`` (adapters, size, steps, guidance, scheduler). Each
group is cut into batches of the size the batch table gives for its model and size. The
generators receive batches already formed (they still split one on CUDA OOM).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.types import ShotParams


@dataclass(frozen=True)
class PackshotKey:
    """What a packshot shot adds to its batch key."""

    inpaint_model: str | None = None
    control: str = ""  # ``ControlSpec.key()``; "" without a ControlNet


@dataclass(frozen=True)
class GpuBatch:
    model_id: str  # the model the batch runs on
    packshot: PackshotKey | None  # None: text-to-image
    shots: list[ShotParams]


def plan_gpu_batches(
    params: Sequence[ShotParams],
    packshots: Mapping[int, PackshotKey],
    size_for: Callable[[str, ShotParams], int],
) -> list[GpuBatch]:
    """``params`` in GPU batches, groups in order of first appearance. ``packshots``: the
    packshot shots' keys by shot id; ``size_for(model id, first shot)``: the batch size."""
    groups: dict[tuple[Any, ...], list[ShotParams]] = {}
    for p in params:
        pk = packshots.get(p.shot_id)
        model = (pk.inpaint_model or p.model_id) if pk is not None else p.model_id
        if model != p.model_id:
            p = dataclasses.replace(p, model_id=model)
        groups.setdefault((model, pk, p.batch_key()), []).append(p)
    batches: list[GpuBatch] = []
    for (model, pk, _), shots in groups.items():
        size = max(1, size_for(model, shots[0]))
        batches += [GpuBatch(model, pk, shots[i : i + size]) for i in range(0, len(shots), size)]
    return batches
