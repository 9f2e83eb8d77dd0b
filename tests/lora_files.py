"""LoRA files as brands bring them, for the tiny (SD1.5-shaped) model: the sample adapter
rewritten into the broken shapes seen in the field (other family, wrong prefix, half
matching, LyCORIS...)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tests.conftest import ROOT

SAMPLE = ROOT / "samples" / "loras" / "acme_style_tiny.safetensors"


def sample_state() -> dict[str, torch.Tensor]:
    return load_file(str(SAMPLE))


def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def half_matching(path: Path) -> Path:
    """Half of the adapted modules moved to a block the model lacks (A and B together)."""
    state = sample_state()
    modules = sorted({k.rsplit(".lora_", 1)[0] for k in state})
    moved = set(modules[::2])
    out = {}
    for k, v in state.items():
        mod = k.rsplit(".lora_", 1)[0]
        out[_elsewhere(k) if mod in moved else k] = v
    return _save(out, path)


def _elsewhere(key: str) -> str:
    """The key of a module in a block the tiny UNet does not have."""
    return "unet.extra_blocks.0." + key.removeprefix("unet.")


def no_match(path: Path) -> Path:
    return _save({_elsewhere(k): v for k, v in sample_state().items()}, path)


def wrong_prefix(path: Path) -> Path:
    """A raw peft save: ``base_model.model.`` where diffusers expects ``unet.``."""
    return _save(
        {"base_model.model." + k.removeprefix("unet."): v for k, v in sample_state().items()}, path
    )


def sdxl_kohya(path: Path) -> Path:
    """An SDXL LoRA in kohya sd-scripts' names (LDM blocks, two text encoders)."""
    te2 = "lora_te2_text_model_encoder_layers_0_self_attn_q_proj"
    unet = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k"
    return _save(
        {
            f"{te2}.lora_down.weight": torch.zeros(4, 1280),
            f"{te2}.lora_up.weight": torch.zeros(1280, 4),
            f"{te2}.alpha": torch.tensor(4.0),
            f"{unet}.lora_down.weight": torch.zeros(4, 2048),
            f"{unet}.lora_up.weight": torch.zeros(640, 4),
            f"{unet}.alpha": torch.tensor(4.0),
        },
        path,
    )


def wrong_shape(path: Path) -> Path:
    """One cross-attention projection made for a wider text encoder than the model's."""
    state = sample_state()
    key = next(k for k in sorted(state) if ".attn2.to_k.lora_A" in k)
    rank = state[key].shape[0]
    state[key] = torch.zeros(rank, 48)
    return _save(state, path)


def loha(path: Path) -> Path:
    """A LyCORIS LoHa (Hadamard product) adapter in kohya names."""
    mod = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    return _save(
        {
            f"{mod}.hada_w1_a": torch.zeros(64, 4),
            f"{mod}.hada_w1_b": torch.zeros(4, 64),
            f"{mod}.hada_w2_a": torch.zeros(64, 4),
            f"{mod}.hada_w2_b": torch.zeros(4, 64),
            f"{mod}.alpha": torch.tensor(4.0),
        },
        path,
    )


def kohya(path: Path) -> Path:
    """The sample in kohya sd-scripts' names (``lora_unet_<module>.lora_down/up``, alphas)."""
    out: dict[str, torch.Tensor] = {}
    for k, v in sample_state().items():
        mod, _, part = k.removeprefix("unet.").rpartition(".lora_")
        name = "lora_unet_" + mod.replace(".", "_")
        out[f"{name}.lora_{'down' if part.startswith('A') else 'up'}.weight"] = v
        out[f"{name}.alpha"] = torch.tensor(
            float(v.shape[0] if part.startswith("A") else v.shape[1])
        )
    return _save(out, path)


def legacy(path: Path) -> Path:
    """The sample in diffusers' old attention-processor names (``processor.to_q_lora.down``)."""
    out: dict[str, torch.Tensor] = {}
    for k, v in sample_state().items():
        mod, _, part = k.rpartition(".lora_")
        block, _, proj = mod.rpartition(".to_")
        proj = proj.replace("out.0", "out")
        out[
            f"{block}.processor.to_{proj}_lora.{'down' if part.startswith('A') else 'up'}.weight"
        ] = v
    return _save(out, path)


def lokr(path: Path) -> Path:
    """A LyCORIS LoKr (Kronecker product) adapter in kohya names."""
    mod = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    return _save(
        {
            f"{mod}.lokr_w1": torch.zeros(8, 8),
            f"{mod}.lokr_w2": torch.zeros(8, 8),
            f"{mod}.alpha": torch.tensor(4.0),
        },
        path,
    )
