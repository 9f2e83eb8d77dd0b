"""The offline ``tiny`` model preset: a small random-weight Stable Diffusion pipeline.

No machine here can download weights, so tests and the embedded demo use real diffusers
and transformers architectures built from configs with a fixed seed. The folder is written
once with ``save_pretrained`` (safetensors) under ``settings.model_cache_dir/tiny-sd`` and then
loaded back through the same ``from_pretrained`` path production uses.

Its images are noise. They exercise the line; they are never product photos.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from pipeline.files import publish_dir
from pipeline.generate.clip_tokenizer import write_clip_tokenizer_files

TINY_DIRNAME = "tiny-sd"
# The 9-channel inpainting variant (latents + mask + masked-image latents in), for packshot
# shots with a brand ``inpaint_model: tiny-inpaint``. Same VAE, text encoder and blocks.
TINY_INPAINT_DIRNAME = "tiny-sd-inpaint"
# A ControlNet for the tiny UNet's blocks (brand ``controlnet: {path: tiny-controlnet}``).
TINY_CONTROLNET_DIRNAME = "tiny-controlnet"
# Bump when the architecture below changes, so stale caches are rebuilt rather than reused.
TINY_VERSION = "1"
_MARKER = "shotline_tiny.json"
TINY_SEED = 1234
TINY_SIZE = 64  # default image size in pixels; the VAE downsamples by 8 to an 8x8 latent


def tiny_model_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / TINY_DIRNAME


def _is_complete(path: Path) -> bool:
    marker = path / _MARKER
    if not marker.is_file():
        return False
    try:
        return bool(json.loads(marker.read_text())["version"] == TINY_VERSION)
    except (ValueError, KeyError):
        return False


def build_tiny_pipeline(in_channels: int = 4) -> Any:  # StableDiffusion(Inpaint)Pipeline
    """Build the random-weight pipeline in memory (deterministic: fixed torch seed).

    ``in_channels=9`` gives the inpainting layout (4 latent + 1 mask + 4 masked-image latent
    channels) as a ``StableDiffusionInpaintPipeline``; the rest is built identically.
    """
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionInpaintPipeline,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(TINY_SEED)
    unet = UNet2DConditionModel(
        sample_size=TINY_SIZE // 8,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        # Four blocks give the usual x8 downsampling, so sizes mean the same as for SD1.5.
        block_out_channels=(8, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=TINY_SIZE,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=32,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )
    with tempfile.TemporaryDirectory() as tok_dir:
        write_clip_tokenizer_files(Path(tok_dir))
        # from_pretrained maps the file names itself; the constructor's argument names
        # changed between transformers 4 and 5.
        tokenizer = CLIPTokenizer.from_pretrained(
            tok_dir, pad_token="<|endoftext|>", model_max_length=77
        )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
    )
    pipe_cls = StableDiffusionInpaintPipeline if in_channels == 9 else StableDiffusionPipeline
    return pipe_cls(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def ensure_tiny_model(cache_dir: Path, inpaint: bool = False) -> Path:
    """Return the tiny preset's folder (``inpaint``: the 9-channel one), building it once.

    Safe when processes race: each builds into its own temp folder next to the target and
    renames it into place; a loser of the race discards its copy and uses the winner's.
    """
    target = Path(cache_dir) / TINY_INPAINT_DIRNAME if inpaint else tiny_model_dir(cache_dir)
    if _is_complete(target):
        return target

    def build(tmp: Path) -> None:
        pipe = build_tiny_pipeline(in_channels=9 if inpaint else 4)
        pipe.save_pretrained(tmp, safe_serialization=True)
        (tmp / _MARKER).write_text(json.dumps({"version": TINY_VERSION, "seed": TINY_SEED}))

    return publish_dir(target, build, _is_complete)


def build_tiny_controlnet() -> Any:  # ControlNetModel
    """A ControlNet for the tiny UNet (4 latent channels in, so it also serves the 9-channel
    inpainting variant, whose ControlNet input is the plain latents). ``from_unet`` starts
    its zero convolutions at zero, which would make it a no-op; here they get small random
    weights (fixed seed) so that a test can see the control image change the scene."""
    import torch
    from diffusers import ControlNetModel

    unet = build_tiny_pipeline().unet
    controlnet = ControlNetModel.from_unet(
        unet, conditioning_embedding_out_channels=(8, 16, 32, 64)
    )
    gen = torch.Generator().manual_seed(TINY_SEED + 1)
    with torch.no_grad():
        for name, param in controlnet.named_parameters():
            zero_init = name.startswith(
                (
                    "controlnet_down_blocks",
                    "controlnet_mid_block",
                    "controlnet_cond_embedding.conv_out",
                )
            )
            if zero_init:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
    return controlnet


def ensure_tiny_controlnet(cache_dir: Path) -> Path:
    """The tiny ControlNet's folder (diffusers layout: config.json + safetensors), built once."""
    target = Path(cache_dir) / TINY_CONTROLNET_DIRNAME
    if _is_complete(target):
        return target

    def build(tmp: Path) -> None:
        build_tiny_controlnet().save_pretrained(tmp, safe_serialization=True)
        (tmp / _MARKER).write_text(json.dumps({"version": TINY_VERSION, "seed": TINY_SEED}))

    return publish_dir(target, build, _is_complete)
