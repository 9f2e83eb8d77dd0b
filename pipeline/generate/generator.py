"""The generation stage: shots in, images plus lineage metadata out.

``load_generator(settings, model_id)`` loads a model once (per worker process) and applies
the precision, memory and speed options from settings. ``DiffusersGenerator.generate(shots)`` groups
shots by ``ShotParams.batch_key()`` into batches of ``settings.batch_size``, gives every image
its own ``torch.Generator`` seeded from its shot (so an image never depends on its batch
neighbours), activates the batch's LoRA set (fused), and splits a batch in half on CUDA OOM.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import platform
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from PIL import Image

from pipeline.failures import Failure, FailureKind, failure_of
from pipeline.generate.batch_table import architecture, batch_size_for
from pipeline.generate.hires import tiled_vae
from pipeline.generate.lora import LoraError, LoraManager, StoreAdapters, adapter_name
from pipeline.generate.modelspec import ModelLoadError, ModelSpec, load_pipeline, model_digest
from pipeline.generate.prompt_cache import PromptCache
from pipeline.generate.schedulers import make_scheduler
from pipeline.types import GenerationOutput, ShotParams

if TYPE_CHECKING:
    import torch

    from pipeline.generate.hires import HiresPass
    from pipeline.generate.inpaint import Inpainter
    from pipeline.settings import Settings

log = logging.getLogger(__name__)

PNG_COMPRESS_LEVEL = 6
OOM_MESSAGE = "CUDA out of memory at batch size 1"


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes that depend only on the pixels: no metadata chunks, fixed compression."""
    buf = io.BytesIO()
    img = image if image.mode in ("RGB", "RGBA", "L") else image.convert("RGB")
    # A fresh image drops any info (text chunks, gamma, dpi) carried by the source.
    clean = Image.frombytes(img.mode, img.size, img.tobytes())
    clean.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL, optimize=False)
    return buf.getvalue()


def library_versions() -> dict[str, str]:
    import diffusers
    import peft
    import PIL
    import torch
    import transformers

    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "pillow": PIL.__version__,
    }
    if torch.version.cuda:
        versions["cuda"] = torch.version.cuda
    return versions


def resolve_device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """fp16 on CUDA and fp32 on CPU by default (CPU half-precision kernels are slow or missing)."""
    import torch

    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def device_name(device: torch.device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def _batch_invariant_mode() -> Any:
    """A scoped torch function mode that makes each sample's arithmetic batch-independent.

    GEMM and convolution kernels pick blocking and algorithms by batch size, and norm/conv
    kernels pick a memory-format path from strides, which differ between a lone sample and
    a slice of a batch. Either way a sample's rounding (and after a few denoising steps, its
    pixels) would depend on its neighbours. So linear/conv run one sample at a time, and
    their and group norm's inputs are made contiguous first. Every other op in a diffusion
    pipeline is per-sample already. Cheap on the CPU; on CUDA it gives up the batching
    speed-up, so it is off there by default.
    """
    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    per_sample = {F.linear, F.conv1d, F.conv2d}
    layout_sensitive = {F.group_norm, *per_sample}

    class BatchInvariantMode(TorchFunctionMode):
        def __torch_function__(
            self, func: Any, types: Any, args: Any = (), kwargs: Any = None
        ) -> Any:
            kwargs = kwargs or {}
            if func in layout_sensitive and args and isinstance(args[0], torch.Tensor):
                x = args[0].contiguous()
                rest = args[1:]
                if func in per_sample and x.dim() >= 2 and x.shape[0] > 1:
                    parts = [func(x[i : i + 1], *rest, **kwargs) for i in range(x.shape[0])]
                    return torch.cat(parts)
                return func(x, *rest, **kwargs)
            return func(*args, **kwargs)

    return BatchInvariantMode()


@dataclass
class _BatchResult:
    images: list[Image.Image]
    timings: dict[str, float] = field(default_factory=dict)
    pixels: list[Any] = field(default_factory=list)  # uint8 (3, H, W) on the device


def to_uint8(decoded: torch.Tensor) -> torch.Tensor:
    """VAE output in [-1, 1] -> uint8 pixels, on its own device: the same float32 steps as
    diffusers' ``VaeImageProcessor.postprocess`` (denormalize, * 255, round half to even),
    so the PIL image built from it is the one diffusers would return, bit for bit."""
    import torch

    return decoded.float().mul(0.5).add(0.5).clamp(0, 1).mul(255).round().to(torch.uint8)


class DiffusersGenerator:
    """A loaded pipeline plus the options and state that go with it. One per worker process."""

    def __init__(
        self,
        pipe: Any,
        settings: Settings,
        model_id: str,
        digest: str,
        load_seconds: float = 0.0,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.settings = settings
        self.model_id = model_id
        self.model_digest = digest
        self.load_seconds = load_seconds
        self.device = device or resolve_device(settings.device)
        self.dtype = dtype or resolve_dtype(settings.dtype, self.device)
        self.device_name = device_name(self.device)
        self.batch_invariant = (
            self.device.type == "cpu"
            if settings.batch_invariant == "auto"
            else settings.batch_invariant == "on"
        )
        self.library_versions = library_versions()
        self.pipe = pipe
        self.lora = LoraManager(
            pipe, cache_size=settings.lora_cache_size, fuse=True, fetch=StoreAdapters(settings)
        )
        self.prompts = PromptCache(settings.prompt_dedup, settings.prompt_cache_size)
        self.architecture = architecture(pipe)
        self._base_scheduler_config = pipe.scheduler.config
        self._schedulers: dict[str, Any] = {}
        self.compile_seconds: float | None = None  # wall time of the first compiled call
        self._compiled = False
        self._qkv_fused = False
        # PNG encoding (and the inpainter's composite) overlap the next batch on these.
        self.cpu_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="png")
        self._inpainter: Inpainter | None = None
        self._hires: HiresPass | None = None
        self._apply_options()

    @classmethod
    def from_pipeline(
        cls, pipe: Any, settings: Settings, model_id: str, digest: str = "unknown"
    ) -> DiffusersGenerator:
        """Wrap an already-built pipeline (benchmarks build real-size ones in memory)."""
        return cls(pipe, settings, model_id, digest)

    def inpainter(self) -> Inpainter:
        """The inpainting pipeline on this generator's modules (built once, no second load)."""
        if self._inpainter is None:
            from pipeline.generate.inpaint import Inpainter

            self._inpainter = Inpainter(self)
        return self._inpainter

    def hires_pass(self) -> HiresPass:
        """The img2img pipeline on this generator's modules, for shots with an output size
        apart from the native one (built once, no second load)."""
        if self._hires is None:
            from pipeline.generate.hires import HiresPass

            self._hires = HiresPass(self)
        return self._hires

    # --- setup ---------------------------------------------------------------------

    def _apply_options(self) -> None:
        import torch

        s, pipe = self.settings, self.pipe
        pipe.set_progress_bar_config(disable=True)
        denoiser: Any = getattr(pipe, "unet", None)
        if denoiser is None:
            denoiser = getattr(pipe, "transformer", None)
        if denoiser is None:
            raise ModelLoadError(f"{self.model_id}: pipeline has no unet or transformer")
        if s.fp8_storage:
            if self._fp8_capable():
                # Weights stored as fp8 and upcast per layer: about half the weight memory.
                # Fusing a LoRA would add its delta into fp8 storage (lossy, and unsupported
                # by in-place fp8 arithmetic), so adapters stay unfused.
                self.lora.fuse = False
                denoiser.enable_layerwise_casting(
                    storage_dtype=torch.float8_e4m3fn, compute_dtype=self.dtype
                )
            else:
                log.warning("fp8_storage needs a CUDA GPU of compute capability 8.9+; ignored")
        if (
            type(pipe).__name__.startswith("StableDiffusionXL")
            and pipe.vae.dtype == torch.float16
            and getattr(pipe.vae.config, "force_upcast", False)
        ):
            # The original SDXL VAE overflows in fp16 (diffusers upcasts it per call); keep it
            # in fp32 once instead of converting it back and forth for every batch.
            pipe.vae.to(torch.float32)
        if s.vae_tiling:
            pipe.vae.enable_tiling()
        if s.vae_slicing:
            pipe.vae.enable_slicing()
        if s.cpu_offload and self.device.type == "cuda":
            pipe.enable_model_cpu_offload(device=self.device)
        else:
            pipe.to(self.device)
        # SDPA (torch.nn.functional.scaled_dot_product_attention) is diffusers' default
        # attention processor on torch 2.x; nothing to switch on.
        if s.channels_last and hasattr(pipe, "unet"):
            pipe.unet.to(memory_format=torch.channels_last)
        if s.compile_unet:
            # In place (nn.Module.compile) so the module type, and LoRA loading, stay intact.
            # Compiling happens on the first call; its cost is logged then.
            denoiser.compile()
            self._compiled = True

    def _fp8_capable(self) -> bool:
        import torch

        if self.device.type != "cuda":
            return False
        return torch.cuda.get_device_capability(self.device) >= (8, 9)

    def scheduler(self, name: str) -> Any:
        if name not in self._schedulers:
            self._schedulers[name] = make_scheduler(name, self._base_scheduler_config)
        return self._schedulers[name]

    def activate_adapters(self, shot: ShotParams) -> None:
        # Fused QKV projections bypass to_q/to_k/to_v, so LoRA (un)fusing happens on the
        # separate projections and QKV is re-fused afterwards from the updated weights.
        wanted = tuple((adapter_name(a), float(a.weight)) for a in shot.adapters)
        if self.settings.fuse_qkv and self._qkv_fused and wanted != self.lora.active:
            self.pipe.unfuse_qkv_projections()
            self._qkv_fused = False
        self.lora.activate(shot.adapters)
        if self.settings.fuse_qkv and not self._qkv_fused:
            self.pipe.fuse_qkv_projections()
            self._qkv_fused = True

    # --- generation ----------------------------------------------------------------

    def generate(
        self, shots: Sequence[ShotParams], batch_id: str | None = None
    ) -> list[GenerationOutput]:
        """Images for ``shots``, in input order. Per-shot failures are in ``error``."""
        batch_id = batch_id or uuid.uuid4().hex
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, shot in enumerate(shots):
            groups.setdefault(shot.batch_key(), []).append(i)
        results: list[GenerationOutput | None] = [None] * len(shots)
        pending: list[tuple[int, Future[bytes], Image.Image, Any, dict[str, float]]] = []
        for indices in groups.values():
            first = shots[indices[0]]
            size = batch_size_for(self.settings, self.architecture, *first.output_size)
            for start in range(0, len(indices), size):
                chunk = [shots[i] for i in indices[start : start + size]]
                chunk_idx = indices[start : start + size]
                for idx, outcome in zip(chunk_idx, self._run_split(chunk), strict=True):
                    if isinstance(outcome, Failure):
                        results[idx] = self.output(shots[idx], batch_id, {}, failure=outcome)
                    else:
                        image, pixels, timings = outcome
                        # PNG encoding (zlib releases the GIL) overlaps the next batch.
                        fut = self.cpu_pool.submit(encode_png, image)
                        pending.append((idx, fut, image, pixels, timings))
        for idx, fut, image, pixels, timings in pending:
            t0 = time.perf_counter()
            png = fut.result()
            timings = {**timings, "encode_wait": time.perf_counter() - t0}
            out = self.output(shots[idx], batch_id, timings, image=image, png=png)
            out.pixels = pixels
            results[idx] = out
        return [r for r in results if r is not None]

    def output(
        self,
        shot: ShotParams,
        batch_id: str,
        timings: dict[str, float],
        image: Image.Image | None = None,
        png: bytes | None = None,
        failure: Failure | None = None,
    ) -> GenerationOutput:
        """One shot's output record (a ``failure`` instead of an image: its reason and kind)."""
        return GenerationOutput(
            shot_id=shot.shot_id,
            image=image,
            png=png,
            sha256=hashlib.sha256(png).hexdigest() if png is not None else None,
            model_digest=self.model_digest,
            timings={"load": self.load_seconds, **timings},
            device=self.device_name,
            library_versions=self.library_versions,
            batch_id=batch_id,
            error=failure.reason if failure else None,
            error_kind=failure.kind if failure else None,
        )

    def _run_split(
        self, chunk: list[ShotParams]
    ) -> list[tuple[Image.Image, Any, dict[str, float]] | Failure]:
        """Run a batch; on CUDA OOM split it in half and retry, down to single images."""
        import torch

        try:
            result = self._run_batch(chunk)
        except torch.cuda.OutOfMemoryError:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if len(chunk) == 1:
                log.warning("shot %s: CUDA OOM at batch size 1", chunk[0].shot_id)
                reason = (
                    f"{OOM_MESSAGE} ({chunk[0].width}x{chunk[0].height}, {chunk[0].steps} steps "
                    f"on {self.device_name}); try vae_tiling, fp8_storage or cpu_offload"
                )
                return [Failure(FailureKind.oom, reason)]
            half = (len(chunk) + 1) // 2
            log.warning(
                "CUDA OOM at batch size %d; retrying as %d + %d",
                len(chunk),
                half,
                len(chunk) - half,
            )
            return self._run_split(chunk[:half]) + self._run_split(chunk[half:])
        except (LoraError, ModelLoadError, ValueError) as exc:
            # Bad adapters/scheduler names fail these shots, not the whole worker.
            return [failure_of(exc)] * len(chunk)
        timings = {**result.timings, "batch_size": float(len(chunk))}
        pixels = result.pixels or [None] * len(result.images)
        return [(img, px, timings) for img, px in zip(result.images, pixels, strict=True)]

    def _run_batch(self, chunk: list[ShotParams]) -> _BatchResult:
        import torch

        first = chunk[0]
        for shot in chunk:
            if shot.model_id != self.model_id:
                raise ValueError(
                    f"shot {shot.shot_id} wants model {shot.model_id!r}, "
                    f"this generator holds {self.model_id!r}"
                )
        self.pipe.scheduler = self.scheduler(first.scheduler)
        t0 = time.perf_counter()
        self.activate_adapters(first)
        t_lora = time.perf_counter() - t0
        # CPU generators: the initial noise for a seed is the same on every device and GPU
        # model, so a shot re-run elsewhere starts from the same latents.
        generators = [torch.Generator(device="cpu").manual_seed(s.seed) for s in chunk]
        invariant = _batch_invariant_mode() if self.batch_invariant else contextlib.nullcontext()
        with torch.inference_mode(), invariant:
            t1 = time.perf_counter()
            texts = self.prompts.pipe_kwargs(
                self.pipe,
                [s.prompt for s in chunk],
                [s.negative_prompt for s in chunk],
                context=self.lora.active,  # an adapter may touch the text encoders
            )
            latents = self.pipe(
                **texts,
                width=first.width,
                height=first.height,
                num_inference_steps=first.steps,
                guidance_scale=first.guidance,
                generator=generators,
                output_type="latent",
            ).images
            th = time.perf_counter()
            with tiled_vae(self.pipe.vae, on=first.hires is not None):
                if first.hires is not None:  # the second pass, to the output size
                    latents = self.hires_pass().refine(latents, chunk, texts)
                self.sync()
                t2 = time.perf_counter()
                images, pixels = self._decode_pixels(latents)
            t3 = time.perf_counter()
        timings = {"lora": t_lora, "denoise": th - t1, "decode": t3 - t2}
        if first.hires is not None:
            timings["hires"] = t2 - th
        if self._compiled and self.compile_seconds is None:
            self.compile_seconds = t2 - t1
            log.info("torch.compile of the UNet: first call took %.1f s", self.compile_seconds)
            timings["compile_first_call"] = self.compile_seconds
        return _BatchResult(images=images, timings=timings, pixels=pixels)

    def decode(self, latents: Any) -> list[Image.Image]:
        return self._decode_pixels(latents)[0]

    def _decode_pixels(self, latents: Any) -> tuple[list[Image.Image], list[Any]]:
        """The batch's PIL images, and the same pixels as uint8 tensors left on the device
        (for the gate on the GPU host; one copy to the host builds the PIL images)."""
        import torch

        vae = self.pipe.vae
        cfg = vae.config
        # The execution device, not vae.device: under model CPU offload the VAE sits on the
        # CPU until its decode hook moves it, and the hook does not move our inputs.
        latents = latents.to(self.pipe._execution_device)
        latents = latents.to(vae.dtype)
        # The same un-scaling the SD / SDXL / SD3 pipelines apply before their own decode.
        mean, std = getattr(cfg, "latents_mean", None), getattr(cfg, "latents_std", None)
        if mean is not None and std is not None:
            shape = (1, len(mean), 1, 1)
            mean_t = torch.tensor(mean, device=latents.device, dtype=latents.dtype).view(shape)
            std_t = torch.tensor(std, device=latents.device, dtype=latents.dtype).view(shape)
            z = latents * std_t / cfg.scaling_factor + mean_t
        else:
            z = latents / cfg.scaling_factor
        if getattr(cfg, "shift_factor", None) is not None:
            z = z + cfg.shift_factor
        decoded = vae.decode(z, return_dict=False)[0]
        pixels = to_uint8(decoded)
        host = pixels.permute(0, 2, 3, 1).cpu().numpy()
        self.sync()
        return [Image.fromarray(a) for a in host], list(pixels.unbind(0))

    def sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def close(self) -> None:
        self.cpu_pool.shutdown(wait=True)


def load_generator(settings: Settings, model_id: str) -> DiffusersGenerator:
    """Load ``model_id`` (``"tiny"`` = the offline preset) as a ``DiffusersGenerator``."""
    spec = ModelSpec.parse(model_id, settings)
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    t0 = time.perf_counter()
    pipe = load_pipeline(spec, settings, torch_dtype=dtype)
    digest = model_digest(spec, settings)
    load_seconds = time.perf_counter() - t0
    log.info("loaded %s (%s) in %.2f s", model_id, digest[:12], load_seconds)
    return DiffusersGenerator(
        pipe, settings, model_id, digest, load_seconds, device=device, dtype=dtype
    )
