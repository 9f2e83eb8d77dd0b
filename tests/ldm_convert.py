"""A diffusers SD folder written back as one original-layout (LDM) ``.safetensors`` file,
the way single-file checkpoints are published: ``model.diffusion_model.*`` (UNet),
``first_stage_model.*`` (VAE), ``cond_stage_model.transformer.*`` (CLIP text encoder).

The renames are the inverse of diffusers' single-file converters, for any number of levels
and ``layers_per_block`` (the published script hard-codes SD1.5's four levels of two).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

RESNET = [
    ("in_layers.0", "norm1"),
    ("in_layers.2", "conv1"),
    ("out_layers.0", "norm2"),
    ("out_layers.3", "conv2"),
    ("emb_layers.1", "time_emb_proj"),
    ("skip_connection", "conv_shortcut"),
]
UNET_TOP = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}


def _unet_prefixes(cfg: dict) -> list[tuple[str, str]]:
    """(diffusers prefix, LDM prefix) pairs, most specific first."""
    n, per = len(cfg["block_out_channels"]), cfg["layers_per_block"]
    down_attn = ["CrossAttn" in t for t in cfg["down_block_types"]]
    up_attn = ["CrossAttn" in t for t in cfg["up_block_types"]]
    out: list[tuple[str, str]] = []
    for i in range(n):
        for j in range(per):
            out.append(
                (f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{(per + 1) * i + j + 1}.0.")
            )
            if down_attn[i]:
                out.append(
                    (f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{(per + 1) * i + j + 1}.1.")
                )
        for j in range(per + 1):
            out.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{(per + 1) * i + j}.0."))
            if up_attn[i]:
                out.append(
                    (f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{(per + 1) * i + j}.1.")
                )
        if i < n - 1:
            out.append(
                (
                    f"down_blocks.{i}.downsamplers.0.conv.",
                    f"input_blocks.{(per + 1) * (i + 1)}.0.op.",
                )
            )
            out.append(
                (
                    f"up_blocks.{i}.upsamplers.0.",
                    f"output_blocks.{(per + 1) * i + per}.{2 if up_attn[i] else 1}.",
                )
            )
    out.append(("mid_block.attentions.0.", "middle_block.1."))
    out += [(f"mid_block.resnets.{j}.", f"middle_block.{2 * j}.") for j in range(2)]
    return out


def _unet(state: dict[str, torch.Tensor], cfg: dict) -> dict[str, torch.Tensor]:
    prefixes = _unet_prefixes(cfg)
    out = {}
    for key, value in state.items():
        new = key
        for hf, ldm in {**UNET_TOP, **dict(prefixes)}.items():
            if key.startswith(hf):
                new = ldm + key[len(hf) :]
                if ".resnets." in hf or "_block.resnets" in hf:
                    for ldm_part, hf_part in RESNET:
                        new = new.replace(f".{hf_part}.", f".{ldm_part}.")
                break
        out["model.diffusion_model." + new] = value
    return out


def _vae(state: dict[str, torch.Tensor], cfg: dict) -> dict[str, torch.Tensor]:
    n, per = len(cfg["block_out_channels"]), cfg["layers_per_block"]
    pairs = [("nin_shortcut", "conv_shortcut"), ("norm_out", "conv_norm_out")]
    pairs.append(("mid.attn_1.", "mid_block.attentions.0."))
    for i in range(n):
        pairs += [
            (f"encoder.down.{i}.block.{j}.", f"encoder.down_blocks.{i}.resnets.{j}.")
            for j in range(per)
        ]
        if i < n - 1:
            pairs.append((f"down.{i}.downsample.", f"down_blocks.{i}.downsamplers.0."))
            pairs.append((f"up.{n - 1 - i}.upsample.", f"up_blocks.{i}.upsamplers.0."))
        pairs += [
            (f"decoder.up.{n - 1 - i}.block.{j}.", f"decoder.up_blocks.{i}.resnets.{j}.")
            for j in range(per + 1)
        ]
    pairs += [(f"mid.block_{i + 1}.", f"mid_block.resnets.{i}.") for i in range(2)]
    attn = [("norm.", "group_norm."), ("q.", "to_q."), ("k.", "to_k."), ("v.", "to_v.")]
    attn.append(("proj_out.", "to_out.0."))
    out = {}
    for key, value in state.items():
        new = key
        for ldm, hf in pairs:
            new = new.replace(hf, ldm)
        if "attentions" in key:
            for ldm, hf in attn:
                new = new.replace(hf, ldm)
            if value.dim() == 2:  # LDM's VAE attention is 1x1 convolutions
                value = value[:, :, None, None]
        out["first_stage_model." + new] = value
    return out


def write_ldm_checkpoint(folder: Path, out: Path) -> Path:
    """The diffusers SD folder ``folder`` as one LDM-layout safetensors file at ``out``."""
    unet_cfg = json.loads((folder / "unet" / "config.json").read_text())
    vae_cfg = json.loads((folder / "vae" / "config.json").read_text())
    state = _unet(load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors")), unet_cfg)
    state |= _vae(load_file(str(folder / "vae" / "diffusion_pytorch_model.safetensors")), vae_cfg)
    for key, value in load_file(str(folder / "text_encoder" / "model.safetensors")).items():
        name = key if key.startswith("text_model.") else f"text_model.{key}"
        state[f"cond_stage_model.transformer.{name}"] = value
    save_file({k: v.contiguous() for k, v in state.items()}, str(out))
    return out
