"""Validation renders: the brand's ``lora_validation`` prompts with fixed seeds, rendered
with and without the newly trained adapter, side by side on one contact sheet."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.review.contact_sheet import SheetEntry, render_grid_png
from pipeline.training.trainer import set_adapters_enabled


@dataclass(frozen=True)
class ValidationPrompt:
    prompt: str
    seed: int = 0


def _render(pipe: Any, prompt: str, seed: int, size: int, steps: int) -> bytes:
    import torch

    gen = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        image = pipe(
            prompt,
            num_inference_steps=steps,
            guidance_scale=5.0,
            height=size,
            width=size,
            generator=gen,
            output_type="pil",
        ).images[0]
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def render_validation(
    pipe: Any,
    prompts: Sequence[ValidationPrompt],
    size: int,
    steps: int = 20,
    text_encoder: bool = False,
) -> list[tuple[ValidationPrompt, bytes, bytes]]:
    """(prompt, with adapter PNG, without adapter PNG) for each prompt; the adapter is
    switched off for the second render and back on afterwards."""
    out = []
    modules = [pipe.unet] + ([pipe.text_encoder] if text_encoder else [])
    for item in prompts:
        with_adapter = _render(pipe, item.prompt, item.seed, size, steps)
        for m in modules:
            set_adapters_enabled(m, False)
        try:
            base = _render(pipe, item.prompt, item.seed, size, steps)
        finally:
            for m in modules:
                set_adapters_enabled(m, True)
        out.append((item, with_adapter, base))
    return out


def validation_sheet(
    renders: Sequence[tuple[ValidationPrompt, bytes, bytes]], banner: str, thumb_px: int = 256
) -> bytes:
    """A PNG grid: per prompt, the adapter's render then the base model's."""
    entries = []
    for i, (item, with_adapter, base) in enumerate(renders):
        entries.append(
            SheetEntry(2 * i + 1, f"seed {item.seed}", "with adapter", item.prompt, with_adapter)
        )
        entries.append(SheetEntry(2 * i + 2, f"seed {item.seed}", "base model", item.prompt, base))
    return render_grid_png(entries, columns=2, thumb_px=thumb_px, banner=banner)
