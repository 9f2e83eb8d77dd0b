"""The second pass ("hires fix"): a scene generated at the model's native size brought to the
shot's output size (``ShotParams.hires``) by the same model.

The native result is upscaled, in pixels (``lanczos``: decoded, then PIL's Lanczos filter)
or in latent space (``latent``: bicubic interpolation of the latents), and refined by an
img2img pass at the recorded ``strength`` over ``steps`` scheduler steps, with the shot's own
prompt embeddings, guidance, scheduler and a CPU ``torch.Generator`` seeded from its seed: so
``reproduce`` makes the same image. ``HiresPass`` wraps diffusers' img2img pipeline built
with ``AutoPipelineForImage2Image.from_pipe`` over the generator's modules (no second load;
fused LoRAs apply). The VAE works in tiles (``tiled_vae``) while the pass runs and while
its result is decoded, so a 2048 x 2048 decode/encode fits in memory; tiling is put back
as it was afterwards, so a native shot decodes exactly as before.

A packshot's pass is the inpainting pipeline's (``pipeline.generate.inpaint``) at the same
low strength, over the upscaled scene with the product already placed at the output size
from its source (``packshot_init``), so the product core is never regenerated from a copy
shrunk into the model canvas.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from PIL import Image

from pipeline.packshot.composite import composite

if TYPE_CHECKING:
    from pipeline.generate.generator import DiffusersGenerator
    from pipeline.packshot.placement import Placed
    from pipeline.types import HiresSpec, ShotParams

# The pixel upscale's filter: documented, and the same one the packshot's product uses.
UPSCALE_FILTER = Image.Resampling.LANCZOS


@contextlib.contextmanager
def tiled_vae(vae: Any, on: bool = True) -> Iterator[None]:
    """The VAE decoding and encoding in overlapping tiles while the block runs (when ``on``
    and it is not tiled already), as it was afterwards."""
    was = bool(getattr(vae, "use_tiling", False))
    if on and not was:
        vae.enable_tiling()
    try:
        yield
    finally:
        if on and not was:
            vae.disable_tiling()


def spec_of(chunk: Sequence[ShotParams]) -> HiresSpec:
    """The batch's one hires spec (it is part of the batch key)."""
    spec = chunk[0].hires
    if spec is None or any(s.hires != spec for s in chunk):
        raise ValueError("a hires batch needs one output size and second pass for every shot")
    return spec


def upscale_images(images: Sequence[Image.Image], spec: HiresSpec) -> list[Image.Image]:
    return [im.convert("RGB").resize((spec.width, spec.height), UPSCALE_FILTER) for im in images]


def upscale_latents(latents: Any, spec: HiresSpec, scale_factor: int) -> Any:
    """The latents interpolated (bicubic) to the output size's latent grid."""
    import torch.nn.functional as F

    size = (spec.height // scale_factor, spec.width // scale_factor)
    return F.interpolate(latents.float(), size=size, mode="bicubic", align_corners=False).to(
        latents.dtype
    )


def packshot_init(scene: Image.Image, full: Placed) -> Image.Image:
    """The hires pass's input for a packshot: the native scene upscaled to the output size
    with the product placed there from its source (with its shadow) composited over it."""
    up = scene.convert("RGB").resize(full.rgb.shape[1::-1], UPSCALE_FILTER)
    return composite(up, full)


def seeded(chunk: Sequence[ShotParams]) -> list[Any]:
    """One CPU generator per shot, from its seed: the pass's noise is the shot's own."""
    import torch

    return [torch.Generator(device="cpu").manual_seed(s.seed) for s in chunk]


class HiresPass:
    """Img2img on a loaded generator's modules. One per generator (worker process)."""

    def __init__(self, generator: DiffusersGenerator) -> None:
        from diffusers import AutoPipelineForImage2Image

        self.generator = generator
        # Shares every module with generator.pipe: no weights are loaded or copied.
        self.pipe = AutoPipelineForImage2Image.from_pipe(generator.pipe)
        self.pipe.set_progress_bar_config(disable=True)

    def refine(self, latents: Any, chunk: Sequence[ShotParams], texts: dict[str, Any]) -> Any:
        """Native latents in, output-size latents out (still to be decoded, tiled).
        ``texts``: the pipeline's prompt arguments the first pass used (embeddings)."""
        g = self.generator
        spec = spec_of(chunk)
        image: Any
        if spec.upscale == "latent":
            image = upscale_latents(latents, spec, int(g.pipe.vae_scale_factor))
        else:
            image = upscale_images(g.decode(latents), spec)
        self.pipe.scheduler = g.scheduler(chunk[0].scheduler)
        return self.pipe(
            **texts,
            image=image,
            strength=spec.strength,
            num_inference_steps=spec.steps,
            guidance_scale=chunk[0].guidance,
            generator=seeded(chunk),
            output_type="latent",
        ).images
