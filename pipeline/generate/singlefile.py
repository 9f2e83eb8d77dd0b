"""Single-file ``.safetensors`` checkpoints, loaded offline.

diffusers' single-file loader needs the architecture's configs (UNet, VAE, text encoders,
scheduler, tokenizers) besides the weights; without them it looks for a cached Hub snapshot
and, online, downloads one. Here the configs always come from disk: ``SHOTLINE_MODEL_CONFIG``
(a local diffusers folder) or the configs this project ships for the standard families
(``configs/*.json``, written from the published architecture configs), picked by the
family the checkpoint's own tensor names and shapes say it is.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.files import InputFileError, publish_dir
from pipeline.weights import safetensors_header

if TYPE_CHECKING:
    from pipeline.settings import Settings

SHIPPED_FAMILIES = ("sd15", "sd2", "sdxl", "sdxl_inpaint")
CONFIGS_DIRNAME = "single-file-configs"
_UNET_IN = "model.diffusion_model.input_blocks.0.0.weight"
_MARKER = "shotline_configs.json"
# Component folders and the config file name each one's loader reads.
_CONFIG_FILES = {
    "unet": "config.json",
    "vae": "config.json",
    "text_encoder": "config.json",
    "text_encoder_2": "config.json",
    "scheduler": "scheduler_config.json",
    "tokenizer": "tokenizer_config.json",
    "tokenizer_2": "tokenizer_config.json",
}


class SingleFileError(ValueError):
    """A checkpoint whose configs cannot be found offline (the message says what to set)."""


def checkpoint_family(path: Path) -> str:
    """sd15, sd2, sdxl or sdxl_inpaint from the checkpoint's header (no tensor is read)."""
    try:
        header = safetensors_header(path, "checkpoint")
    except InputFileError as exc:
        raise SingleFileError(str(exc)) from None
    in_channels = header.get(_UNET_IN, {}).get("shape", [0, 4])[1]
    if any(k.startswith("conditioner.embedders.1.") for k in header):
        family = "sdxl" if in_channels == 4 else "sdxl_inpaint"
    elif any(k.startswith("cond_stage_model.model.") for k in header):  # OpenCLIP ViT-H
        family = "sd2"
    elif any(k.startswith("cond_stage_model.transformer.") for k in header):  # CLIP ViT-L
        family = "sd15"
    else:
        raise SingleFileError(
            f"{path}: cannot tell the model family from its tensor names; set "
            "SHOTLINE_MODEL_CONFIG to a local diffusers folder with its configs"
        )
    if family != "sdxl_inpaint" and in_channels != 4:
        raise SingleFileError(
            f"{path}: a {family} checkpoint with {in_channels} input channels has no shipped "
            "configs; set SHOTLINE_MODEL_CONFIG to a local diffusers folder with its configs"
        )
    return family


def shipped_config(family: str) -> dict[str, Any]:
    """The shipped configs of ``family``, one JSON object per component."""
    text = resources.files("pipeline.generate").joinpath(f"configs/{family}.json").read_text()
    data: dict[str, Any] = json.loads(text)
    return data


def _write_config_folder(family: str, out: Path) -> None:
    from pipeline.generate.clip_tokenizer import write_clip_tokenizer_files

    data = shipped_config(family)
    (out / "model_index.json").write_text(json.dumps(data["model_index"], indent=1))
    for comp, fname in _CONFIG_FILES.items():
        if comp not in data:
            continue
        (out / comp).mkdir()
        (out / comp / fname).write_text(json.dumps(data[comp], indent=1))
        if comp.startswith("tokenizer"):
            write_clip_tokenizer_files(out / comp)  # OpenAI CLIP's BPE, from open_clip
    (out / _MARKER).write_text(json.dumps({"family": family}))


def family_config_folder(family: str, cache_dir: Path) -> Path:
    """A diffusers-layout folder of ``family``'s shipped configs (no weights), written once
    under ``cache_dir`` and named by the configs' digest, so an update writes a new one."""
    digest = hashlib.sha256(json.dumps(shipped_config(family), sort_keys=True).encode())
    target = Path(cache_dir) / CONFIGS_DIRNAME / f"{family}-{digest.hexdigest()[:12]}"
    return publish_dir(
        target, lambda tmp: _write_config_folder(family, tmp), lambda p: (p / _MARKER).is_file()
    )


def config_folder_for(path: Path, settings: Settings) -> Path:
    """The local folder of configs for the checkpoint at ``path`` (``SingleFileError``)."""
    given = settings.model_config_dir
    if given is not None:
        folder = Path(given).expanduser()
        if not (folder / "model_index.json").is_file():
            raise SingleFileError(
                f"SHOTLINE_MODEL_CONFIG={folder}: not a diffusers folder (no model_index.json)"
            )
        return folder
    return family_config_folder(checkpoint_family(path), Path(settings.model_cache_dir))


def pipeline_class_name(folder: Path) -> str:
    """The diffusers pipeline class a config folder names (its ``model_index.json``)."""
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    return str(index.get("_class_name", ""))


def text2image_class_name(folder: Path) -> str:
    """The text-to-image pipeline for a folder: an inpainting folder's weights are loaded
    by the matching text-to-image class (its inpainter is built from the same modules)."""
    name = pipeline_class_name(folder)
    return {
        "StableDiffusionXLInpaintPipeline": "StableDiffusionXLPipeline",
        "StableDiffusionInpaintPipeline": "StableDiffusionPipeline",
    }.get(name, name)
