"""The trained adapter as a diffusers-format ``.safetensors`` (what ``load_lora_weights`` reads)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pipeline.digests import sha256_file
from pipeline.training.trainer import ADAPTER, LoraTrainer


def _metadata(module: Any) -> dict[str, Any]:
    # Saved with the weights so a loader uses the trained alpha, not alpha = rank.
    meta: dict[str, Any] = module.peft_config[ADAPTER].to_dict()
    return meta


# peft keeps these as sets; their list order in the JSON follows the process's hash seed.
_SET_FIELDS = ("target_modules", "exclude_modules", "modules_to_save")


def _sorted_sets(data: Any) -> Any:
    if not isinstance(data, dict):
        return data
    return {
        k: sorted(v) if k.endswith(_SET_FIELDS) and isinstance(v, list) else v
        for k, v in data.items()
    }


def _canonical(src: Path, dst: Path) -> None:
    """Rewrite ``src`` so equal weights give equal bytes: the file's sha256 is the
    adapter's identity, and diffusers' header can come out in a different order per call."""
    import contextlib
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), "pt") as fh:
        meta = dict(fh.metadata() or {})
        tensors = {k: fh.get_tensor(k) for k in sorted(fh.keys())}
    for key, value in list(meta.items()):
        # A plain string ("format": "pt") is not JSON and stays as it is.
        with contextlib.suppress(ValueError):
            meta[key] = json.dumps(_sorted_sets(json.loads(value)), sort_keys=True, indent=2)
    # safetensors writes metadata from a hash map, so two keys come out in either order:
    # keep only the adapter config (the "format" marker is optional for LoRA loaders).
    keep = {k: v for k, v in meta.items() if k == "lora_adapter_metadata"}
    save_file(tensors, str(dst), metadata=keep or None)


def save_adapter(trainer: LoraTrainer, path: Path) -> str:
    """Write the trainer's adapter to ``path`` (diffusers LoRA format); return its sha256."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils.state_dict_utils import convert_state_dict_to_diffusers

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
            _canonical(Path(d, "adapter.safetensors"), tmp)

    atomic_write_via(path, write)
    return sha256_file(path)
