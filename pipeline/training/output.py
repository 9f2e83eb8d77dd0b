"""The trained adapter as a diffusers-format ``.safetensors`` (what ``load_lora_weights`` reads)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pipeline.digests import sha256_file
from pipeline.training.trainer import ADAPTER, LoraTrainer


def _metadata(module: Any) -> dict[str, Any]:
    # Saved with the weights so a loader uses the trained alpha, not alpha = rank.
    return module.peft_config[ADAPTER].to_dict()


def save_adapter(trainer: LoraTrainer, path: Path) -> str:
    """Write the trainer's adapter to ``path`` (diffusers LoRA format); return its sha256."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers

    from pipeline.files import atomic_write_via

    state = trainer.adapter_state()
    kwargs: dict[str, Any] = {
        "unet_lora_layers": convert_state_dict_to_diffusers(state["unet"]),
        "unet_lora_adapter_metadata": _metadata(trainer.pipe.unet),
    }
    if "te" in state:
        kwargs["text_encoder_lora_layers"] = convert_state_dict_to_diffusers(state["te"])
        kwargs["text_encoder_lora_adapter_metadata"] = _metadata(trainer.pipe.text_encoder)
    path = Path(path)

    def write(tmp: Path) -> None:
        with tempfile.TemporaryDirectory(dir=path.parent) as d:
            StableDiffusionPipeline.save_lora_weights(
                d, weight_name="adapter.safetensors", safe_serialization=True, **kwargs
            )
            Path(d, "adapter.safetensors").replace(tmp)

    atomic_write_via(path, write)
    return sha256_file(path)


def remove_adapters(trainer: LoraTrainer) -> None:
    """Take the training adapter off the pipeline (so it can render without it)."""
    trainer.pipe.unet.delete_adapters(ADAPTER)
    if trainer.cfg.text_encoder:
        trainer.pipe.text_encoder.delete_adapters(ADAPTER)
