"""Inpainting generation for packshot shots: the scene is generated around the real product.

``Inpainter`` turns a loaded ``DiffusersGenerator`` into an inpainting one without a second load:
``AutoPipelineForInpainting.from_pipe`` shares the text-to-image pipeline's modules (UNet, VAE,
text encoder), so the LoRAs the generator fuses into its UNet apply here too. A brand's
``inpaint_model`` (a 9-channel inpainting checkpoint such as ``tiny-inpaint``) is loaded once as
its own generator (``load_generator``) and wrapped the same way. The generator is the loaded
model component both pipelines share (pipe, device, dtype, LoRA manager, prompt cache, decode,
its CPU threads); this module calls only its public members.

``generate(shots)`` works like ``DiffusersGenerator.generate``: shots grouped by ``batch_key``,
batches of ``batch_size_for`` the architecture and size (the same table), a CPU
``torch.Generator`` per shot, the batch's LoRA set, the batch-invariant mode on the CPU and the
CUDA OOM split, and each shot in a batch with its own image and mask. After decoding, each
image goes through ``pipeline.packshot.stage.composite_checked`` (the real product pixels
pasted back, and the exact fidelity check); the output's ``image``/``png`` are the composited
image, ``raw`` the decoded one. With a ``ControlSpec`` (the brand's
ControlNet, recorded on the shot at plan time) the batch runs diffusers' ControlNet
inpainting pipeline on the same shared modules, the placed packshot's canny edges as the
control image (``pipeline.generate.controlnet``).
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PIL import Image

from pipeline.failures import Failure, FailureKind, kind_of
from pipeline.generate.batch_table import batch_size_for
from pipeline.generate.controlnet import ControlSpec, control_image, load_controlnet
from pipeline.generate.generator import (
    OOM_MESSAGE,
    DiffusersGenerator,
    _batch_invariant_mode,
    encode_png,
)
from pipeline.generate.hires import packshot_init, seeded, spec_of, tiled_vae
from pipeline.generate.lora import LoraError
from pipeline.generate.modelspec import ModelLoadError
from pipeline.packshot.fidelity import Fidelity
from pipeline.packshot.placement import Placed
from pipeline.packshot.stage import composite_checked

if TYPE_CHECKING:
    from pipeline.settings import Settings
    from pipeline.types import GenerationOutput, ShotParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InpaintShot:
    """A packshot shot: the generation parameters and the placed product on its canvas."""

    params: ShotParams
    placed: Placed  # on the model's canvas (the shot's width x height): what the model sees
    # With an output size (``params.hires``): the product placed at that size from its
    # source, which the second pass starts from and the composite puts back.
    full: Placed | None = None

    @property
    def final(self) -> Placed:
        """The placement the product is composited back from (the output size's)."""
        return self.full if self.full is not None else self.placed

    def check(self) -> None:
        h, w = self.placed.rgb.shape[:2]
        if (w, h) != (self.params.width, self.params.height):
            raise ValueError(
                f"shot {self.params.shot_id}: placement is {w}x{h}, the shot "
                f"{self.params.width}x{self.params.height}"
            )
        fh, fw = self.final.rgb.shape[:2]
        if (fw, fh) != self.params.output_size:
            ow, oh = self.params.output_size
            raise ValueError(
                f"shot {self.params.shot_id}: placement at the output size is {fw}x{fh}, "
                f"the shot's output {ow}x{oh}"
            )
        if self.params.hires is not None and self.params.hires.upscale != "lanczos":
            raise ValueError(
                f"shot {self.params.shot_id}: a packshot's second pass upscales in pixels "
                f'(upscale "lanczos"), not {self.params.hires.upscale!r}'
            )


@dataclass
class PackshotOutput:
    """One packshot result: the generation record (composited image) plus what made it."""

    output: GenerationOutput
    raw: Image.Image | None  # the decoded scene before the product went back
    fidelity: Fidelity | None  # the exact check before any watermark; None on error


def load_inpainter(settings: Settings, model_id: str) -> Inpainter:
    """An inpainter on its own loaded model: a brand's ``inpaint_model`` (load it once per
    worker and keep it). For the base model, ask the worker's generator (``inpainter()``)."""
    from pipeline.generate.generator import load_generator

    return load_generator(settings, model_id).inpainter()


class Inpainter:
    """Inpainting on a loaded generator's modules. One per generator (worker process)."""

    def __init__(self, generator: DiffusersGenerator) -> None:
        from diffusers import AutoPipelineForInpainting

        self.generator = generator
        # Shares every module with generator.pipe: no weights are loaded or copied.
        self.pipe = AutoPipelineForInpainting.from_pipe(generator.pipe)
        self.pipe.set_progress_bar_config(disable=True)
        self.channels = int(self.pipe.unet.config.in_channels)
        self._controlled: dict[str, Any] = {}  # ControlNet file@sha256 -> its pipeline

    def _pipe_for(self, control: ControlSpec | None) -> Any:
        """The inpainting pipeline, or its ControlNet variant for ``control`` (the ControlNet
        loaded once, checked against the sha256 the shot recorded; ``ModelLoadError``)."""
        if control is None:
            return self.pipe
        key = f"{control.path}@{control.sha256}"  # the weights; the scale is per call
        if key not in self._controlled:
            from diffusers import AutoPipelineForInpainting

            g = self.generator
            model = load_controlnet(control, g.device, g.pipe.unet.dtype)
            pipe = AutoPipelineForInpainting.from_pipe(g.pipe, controlnet=model)
            pipe.set_progress_bar_config(disable=True)
            self._controlled[key] = pipe
        return self._controlled[key]

    @property
    def model_id(self) -> str:
        return self.generator.model_id

    def generate(
        self,
        shots: Sequence[InpaintShot],
        batch_id: str | None = None,
        control: ControlSpec | None = None,
    ) -> list[PackshotOutput]:
        """Composited images for ``shots``, in input order. Per-shot failures are in ``error``
        (a ControlNet that cannot be loaded fails every shot that asked for it)."""
        g = self.generator
        batch_id = batch_id or uuid.uuid4().hex
        groups: dict[tuple[Any, ...], list[int]] = {}
        results: list[PackshotOutput | None] = [None] * len(shots)
        for i, shot in enumerate(shots):
            try:
                shot.check()
            except ValueError as exc:  # fails this shot only, before it can join a batch
                results[i] = self._result(shot, batch_id, Failure(FailureKind.generation, str(exc)))
                continue
            groups.setdefault(shot.params.batch_key(), []).append(i)
        pending: list[tuple[int, Future[PackshotOutput]]] = []
        for indices in groups.values():
            first = shots[indices[0]].params
            size = batch_size_for(g.settings, g.architecture, *first.output_size)
            for start in range(0, len(indices), size):
                idx = indices[start : start + size]
                chunk = [shots[j] for j in idx]
                for i, outcome in zip(idx, self._run_split(chunk, control), strict=True):
                    # Composite, check and PNG encode run on the generator's CPU threads
                    # (numpy, OpenCV and zlib release the GIL) while the next batch denoises.
                    fut = g.cpu_pool.submit(self._result, shots[i], batch_id, outcome)
                    pending.append((i, fut))
        for i, fut in pending:
            results[i] = fut.result()
        return [r for r in results if r is not None]

    def _result(
        self,
        shot: InpaintShot,
        batch_id: str,
        outcome: tuple[Image.Image, dict[str, float]] | Failure,
    ) -> PackshotOutput:
        g = self.generator
        if isinstance(outcome, Failure):
            return PackshotOutput(g.output(shot.params, batch_id, {}, failure=outcome), None, None)
        raw, timings = outcome
        t0 = time.perf_counter()
        final, fid = composite_checked(raw, shot.final)
        t1 = time.perf_counter()
        png = encode_png(final)
        timings = {**timings, "composite": t1 - t0, "encode": time.perf_counter() - t1}
        out = g.output(shot.params, batch_id, timings, image=final, png=png)
        return PackshotOutput(out, raw, fid)

    def _run_split(
        self, chunk: list[InpaintShot], control: ControlSpec | None = None
    ) -> list[tuple[Image.Image, dict[str, float]] | Failure]:
        """Run a batch; on CUDA OOM split it in half and retry, down to single images."""
        import torch

        try:
            images, timings = self._run_batch(chunk, control)
        except torch.cuda.OutOfMemoryError:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if len(chunk) == 1:
                p = chunk[0].params
                log.warning("shot %s: CUDA OOM at batch size 1 (inpainting)", p.shot_id)
                reason = (
                    f"{OOM_MESSAGE} ({p.width}x{p.height} inpainting, {p.steps} steps on "
                    f"{self.generator.device_name}); try vae_tiling, fp8_storage or cpu_offload"
                )
                return [Failure(FailureKind.oom, reason)]
            half = (len(chunk) + 1) // 2
            log.warning("CUDA OOM at inpainting batch size %d; splitting", len(chunk))
            return self._run_split(chunk[:half], control) + self._run_split(chunk[half:], control)
        except (LoraError, ModelLoadError, ValueError) as exc:
            return [Failure(kind_of(exc), str(exc))] * len(chunk)
        timings = {**timings, "batch_size": float(len(chunk))}
        return [(img, timings) for img in images]

    def _run_batch(
        self, chunk: list[InpaintShot], control: ControlSpec | None = None
    ) -> tuple[list[Image.Image], dict[str, float]]:
        import torch

        g = self.generator
        first = chunk[0].params
        for shot in chunk:
            if shot.params.model_id != g.model_id:
                raise ValueError(
                    f"shot {shot.params.shot_id} wants model {shot.params.model_id!r}, "
                    f"this inpainter holds {g.model_id!r}"
                )
        pipe = self._pipe_for(control)
        pipe.scheduler = g.scheduler(first.scheduler)
        t0 = time.perf_counter()
        g.activate_adapters(first)  # fuses into the shared UNet
        t_lora = time.perf_counter() - t0
        # One CPU generator per shot: noise and the VAE's latent sampling are the shot's own.
        generators = [torch.Generator(device="cpu").manual_seed(s.params.seed) for s in chunk]
        images = [Image.fromarray(s.placed.rgb, "RGB") for s in chunk]
        masks = [Image.fromarray(s.placed.inpaint_mask, "L") for s in chunk]
        extra: dict[str, Any] = {}
        if control is not None:
            extra["control_image"] = [control_image(s.placed.rgb, control) for s in chunk]
            extra["controlnet_conditioning_scale"] = control.scale
        invariant = _batch_invariant_mode() if g.batch_invariant else contextlib.nullcontext()
        with torch.inference_mode(), invariant:
            t1 = time.perf_counter()
            latents = pipe(
                **extra,
                prompt=[s.params.prompt for s in chunk],
                negative_prompt=[s.params.negative_prompt for s in chunk],
                image=images,
                mask_image=masks,
                width=first.width,
                height=first.height,
                strength=1.0,
                num_inference_steps=first.steps,
                guidance_scale=first.guidance,
                generator=generators,
                output_type="latent",
            ).images
            th = time.perf_counter()
            hires = first.hires is not None
            with tiled_vae(g.pipe.vae, on=hires):
                if hires:  # the second pass, to the output size
                    latents = self._hires(pipe, chunk, latents, control)
                g.sync()
                t2 = time.perf_counter()
                decoded = g.decode(latents)
            t3 = time.perf_counter()
        timings = {"lora": t_lora, "denoise": th - t1, "decode": t3 - t2}
        return decoded, {**timings, "hires": t2 - th} if hires else timings

    def _hires(
        self, pipe: Any, chunk: list[InpaintShot], latents: Any, control: ControlSpec | None
    ) -> Any:
        """The native scene upscaled (Lanczos) with the product placed at the output size
        from its source over it, refined by the same inpainting pipeline at the recorded low
        strength: the product's core is masked out, so the pass works on the scene."""
        g = self.generator
        first = chunk[0].params
        spec = spec_of([s.params for s in chunk])
        inits = [packshot_init(im, s.final) for im, s in zip(g.decode(latents), chunk, strict=True)]
        extra: dict[str, Any] = {}
        if control is not None:  # the edges of the product placed at the output size
            extra["control_image"] = [control_image(s.final.rgb, control) for s in chunk]
            extra["controlnet_conditioning_scale"] = control.scale
        return pipe(
            **extra,
            prompt=[s.params.prompt for s in chunk],
            negative_prompt=[s.params.negative_prompt for s in chunk],
            image=inits,
            mask_image=[Image.fromarray(s.final.inpaint_mask, "L") for s in chunk],
            width=spec.width,
            height=spec.height,
            strength=spec.strength,
            num_inference_steps=spec.steps,
            guidance_scale=first.guidance,
            generator=seeded([s.params for s in chunk]),
            output_type="latent",
        ).images
