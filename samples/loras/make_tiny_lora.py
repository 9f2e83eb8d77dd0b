"""Regenerate ``samples/loras/acme_style_tiny.safetensors``: a small real LoRA for the tiny preset.

The adapter is built with peft (``LoraConfig`` on the tiny UNet's attention projections,
random weights from a fixed seed) and saved in the diffusers LoRA format that
``load_lora_weights`` reads. Its effect on the tiny preset's noise images is visible but
meaningless: it exists to exercise pinning, caching, switching and fusing.

    .venv/bin/python samples/loras/make_tiny_lora.py

Then update the sha256 pin of ``acme_style`` in ``samples/brands/acme.yaml`` (printed below).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pipeline.generate.lora import write_random_lora  # noqa: E402
from pipeline.generate.tiny_preset import build_tiny_pipeline  # noqa: E402

OUT = Path(__file__).resolve().parent / "acme_style_tiny.safetensors"


def main() -> None:
    pipe = build_tiny_pipeline()  # same seeded architecture as the cached preset
    sha = write_random_lora(pipe.unet, OUT, rank=4, seed=7, scale=0.5)
    print(f"{OUT.name}: {OUT.stat().st_size} bytes, sha256 {sha}")


if __name__ == "__main__":
    main()
