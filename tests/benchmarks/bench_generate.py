"""Generation throughput: shotline's generator vs plain diffusers, in one process.

Times the project's own ``DiffusersGenerator.generate`` end to end (batching, per-image seeds,
pinned + fused brand LoRA, latent decode, PNG encode) at 30 steps with CFG, and the plain
diffusers pipeline on the same architecture (batched, with the LoRA fused the diffusers
way, compiled too when ``--compile``), and prints images/hour, achieved TFLOP/s (counted
with ``torch.utils.flop_counter.FlopCounterMode``) and the ratio ours / plain.

Weights are random: compute does not depend on weight values, and nothing is downloaded.

    # CPU (default): the tiny preset, batch 1 and 4
    .venv/bin/python tests/benchmarks/bench_generate.py
    # CUDA: real-size SD1.5 512² (b=1,8,16) and SDXL 1024² (b=1,4)
    .venv/bin/python tests/benchmarks/bench_generate.py --device cuda --arch sd15,sdxl --compile

Writes JSON to var/bench/bench_generate.json (or ``--json-out``).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from pipeline.digests import sha256_file  # noqa: E402
from pipeline.generate.generator import DiffusersGenerator, load_generator, resolve_dtype  # noqa: E402
from pipeline.generate.modelspec import ModelSpec, load_pipeline  # noqa: E402
from pipeline.generate.tiny_preset import ensure_tiny_model  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from pipeline.types import AdapterRef, ShotParams  # noqa: E402

SAMPLE_LORA = ROOT / "samples" / "loras" / "acme_style_tiny.safetensors"
ARCH_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny": {"size": 64, "batches": (1, 4)},
    "sd15": {"size": 512, "batches": (1, 8, 16)},
    "sdxl": {"size": 1024, "batches": (1, 4)},
}
PROMPT = "studio product photo of item {i}, acmestyle, on a seamless white background"
NEGATIVE = "blurry, text, watermark, logo"
SCHEDULER = "euler"


@dataclass
class Row:
    arch: str
    size: int
    batch: int
    path: str  # "shotline" or "diffusers"
    seconds_per_batch: float
    images_per_hour: float
    tflops: float
    warmup_s: float
    peak_mem_gib: float | None
    ratio: float | None = None
    pct_of_peak: float | None = None  # achieved TFLOP/s over the measured matmul peak
    compile_s: float | None = None  # shotline: wall time of the first compiled call


# --- architectures (random weights, configs in code) ------------------------------


def _tokenizer(settings: Settings) -> Any:
    from transformers import CLIPTokenizer

    # The real CLIP BPE vocabulary from open_clip, as written for the tiny preset.
    return CLIPTokenizer.from_pretrained(ensure_tiny_model(settings.model_cache_dir) / "tokenizer")


def _scheduler() -> Any:
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        timestep_spacing="leading",
    )


def _vae(scaling_factor: float, sample_size: int) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        sample_size=sample_size,
        scaling_factor=scaling_factor,
        force_upcast=False,  # as the fp16-fixed SDXL VAE; random weights don't overflow anyway
    )


def _clip_l(with_projection: bool = False) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        projection_dim=768,
    )
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(cfg)


def build_sd15(settings: Settings) -> Any:
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    unet = UNet2DConditionModel(
        sample_size=64,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768,
        attention_head_dim=8,
    )
    return StableDiffusionPipeline(
        vae=_vae(0.18215, 512),
        text_encoder=_clip_l(),
        tokenizer=_tokenizer(settings),
        unet=unet,
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_sdxl(settings: Settings) -> Any:
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    unet = UNet2DConditionModel(
        sample_size=128,
        block_out_channels=(320, 640, 1280),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(5, 10, 20),
        cross_attention_dim=2048,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    )
    text_encoder_2 = CLIPTextModelWithProjection(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=1280,
            intermediate_size=5120,
            num_hidden_layers=32,
            num_attention_heads=20,
            max_position_embeddings=77,
            hidden_act="gelu",
            projection_dim=1280,
        )
    )
    tok = _tokenizer(settings)
    return StableDiffusionXLPipeline(
        vae=_vae(0.13025, 1024),
        text_encoder=_clip_l(),
        text_encoder_2=text_encoder_2,
        tokenizer=tok,
        tokenizer_2=tok,
        unet=unet,
        scheduler=_scheduler(),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,  # plain baseline must not pay for a watermark we don't time
    )


def build_arch(arch: str, settings: Settings, device: torch.device, dtype: torch.dtype) -> Any:
    torch.manual_seed(0)
    if arch == "tiny":
        pipe = load_pipeline(ModelSpec.parse("tiny", settings), settings, torch_dtype=dtype)
        return pipe.to(device)
    builder = {"sd15": build_sd15, "sdxl": build_sdxl}[arch]
    with torch.device(device):  # random init straight on the GPU: seconds, not minutes
        pipe = builder(settings)
    return pipe.to(device=device, dtype=dtype)


def make_bench_lora(unet: Any, path: Path, rank: int, seed: int = 0) -> str:
    """A random rank-``rank`` LoRA on every attention projection, in the diffusers format.

    Written directly (no peft wrapping of ``unet``) so the plain baseline stays untouched.
    """
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    targets = ("to_q", "to_k", "to_v", "to_out.0")
    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.Linear) and name.endswith(targets) and ".attn" in name:
            a = torch.randn(rank, module.in_features, generator=gen) / module.in_features**0.5
            b = torch.randn(module.out_features, rank, generator=gen) * 0.01
            tensors[f"unet.{name}.lora_A.weight"] = a.half().contiguous()
            tensors[f"unet.{name}.lora_B.weight"] = b.half().contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "pt"})
    return sha256_file(path)


# --- measuring -------------------------------------------------------------------------


def _register_cpu_sdpa_flops() -> None:
    import torch.utils.flop_counter as fc

    # The CPU flash-attention kernel has no formula upstream; attention would count as 0.
    op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    if op not in fc.flop_registry:
        fc.register_flop_formula(op, get_raw=True)(fc.sdpa_flop)


def count_flops_per_image(pipe: Any, size: int, steps: int, guidance: float) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    _register_cpu_sdpa_flops()
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        pipe(
            prompt=PROMPT.format(i=0),
            negative_prompt=NEGATIVE,
            width=size,
            height=size,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=torch.Generator(pipe.device).manual_seed(0),
            output_type="pil",
        )
    return float(counter.get_total_flops())


def measure_matmul_peak(device: torch.device, dtype: torch.dtype) -> float:
    """TFLOP/s of a large matrix product on ``device``: the ceiling the rows are held to.

    CUDA: 8192³ in bf16 (an H200 gives about 790); CPU: 1024³ in fp32. Mean of ten timed
    products after three warm-ups, on random data.
    """
    n, dt = (8192, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
    if device.type != "cuda" and dtype != torch.float32:
        dt = dtype
    a = torch.randn(n, n, device=device, dtype=dt)
    b = torch.randn(n, n, device=device, dtype=dt)
    for _ in range(3):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(10):
        a @ b
    _sync(device)
    return 2 * n**3 * 10 / (time.perf_counter() - t0) / 1e12


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class _Timing:
    warmup_s: float = 0.0
    times: list[float] = field(default_factory=list)
    peak_gib: float | None = None


def _timed_call(fn: Callable[[int], None], it: int, device: torch.device, t: _Timing) -> float:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    t0 = time.perf_counter()
    fn(it)
    _sync(device)
    elapsed = time.perf_counter() - t0
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        t.peak_gib = max(t.peak_gib or 0.0, peak)
    return elapsed


def time_interleaved(
    fns: dict[str, Callable[[int], None]], iters: int, device: torch.device
) -> dict[str, _Timing]:
    """One warm-up call each (includes any compile), then ``iters`` rounds alternating paths.

    Alternating makes both paths see the same machine state (other jobs on a shared CPU,
    GPU clocks), so their ratio is fair even when absolute numbers wobble.
    """
    out = {name: _Timing() for name in fns}
    for name, fn in fns.items():
        out[name].warmup_s = _timed_call(fn, 0, device, out[name])
    for it in range(iters):
        for name, fn in fns.items():
            out[name].times.append(_timed_call(fn, it + 1, device, out[name]))
    return out


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _plain_pipeline(
    arch: str,
    size: int,
    settings: Settings,
    dtype: torch.dtype,
    args: argparse.Namespace,
    console: Console,
) -> tuple[Any, float, Path, str]:
    """Plain diffusers: FLOPs counted eagerly at batch 1, then the LoRA fused the diffusers way."""
    device = torch.device(args.device)
    console.log(f"[{arch}] building {size}x{size} pipeline (random weights) on {device}")
    pipe = build_arch(arch, settings, device, dtype)
    pipe.set_progress_bar_config(disable=True)
    flops = count_flops_per_image(pipe, size, args.steps, args.guidance)
    console.log(f"[{arch}] {flops / 1e12:.3f} TFLOP per image ({args.steps} steps, CFG)")
    if arch == "tiny":
        lora_path, lora_sha = SAMPLE_LORA, sha256_file(SAMPLE_LORA)
    else:
        lora_path = ROOT / "var" / "bench" / f"lora_{arch}_r{args.lora_rank}.safetensors"
        lora_sha = make_bench_lora(pipe.unet, lora_path, args.lora_rank)
    if not args.baseline_no_lora:
        pipe.load_lora_weights(str(lora_path.parent), weight_name=lora_path.name)
        pipe.fuse_lora(lora_scale=args.lora_weight)
    if args.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
    if args.compile:
        pipe.unet.compile()
    return pipe, flops, lora_path, lora_sha


def bench_arch(arch: str, args: argparse.Namespace, console: Console) -> list[Row]:
    device = torch.device(args.device)
    size = args.size or ARCH_DEFAULTS[arch]["size"]
    batches = args.batches or ARCH_DEFAULTS[arch]["batches"]
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        var_dir=ROOT / "var",
        model_cache_dir=ROOT / "var" / "models",
        device=args.device,
        dtype=args.dtype,
        batch_size=max(batches),
        compile_unet=args.compile,
        channels_last=args.channels_last,
        fuse_qkv=args.fuse_qkv,
        batch_invariant=args.batch_invariant,
        fp8_storage=args.fp8,
        prompt_dedup=not args.no_prompt_cache,
        prompt_cache_size=0 if args.no_prompt_cache else 128,
    )
    dtype = resolve_dtype(args.dtype, device)
    pipe, flops, lora_path, lora_sha = _plain_pipeline(arch, size, settings, dtype, args, console)
    # shotline's generator on its own copy of the same architecture; the LoRA goes through
    # the brand path: pinned, verified, cached and fused by LoraManager.
    if arch == "tiny":
        gen = load_generator(settings, "tiny")
    else:
        gen = DiffusersGenerator.from_pipeline(
            build_arch(arch, settings, device, dtype), settings, arch, "random-weights"
        )
    ref = AdapterRef(
        name="acme_style", sha256=lora_sha, weight=args.lora_weight, uri=str(lora_path)
    )

    rows: list[Row] = []
    for b in batches:

        def plain(it: int, b: int = b) -> None:
            with torch.inference_mode():
                pipe(
                    prompt=[PROMPT.format(i=it * b + j) for j in range(b)],
                    negative_prompt=[NEGATIVE] * b,
                    width=size,
                    height=size,
                    num_inference_steps=args.steps,
                    guidance_scale=args.guidance,
                    generator=[torch.Generator("cpu").manual_seed(it * b + j) for j in range(b)],
                    output_type="pil",
                )

        def ours(it: int, b: int = b) -> None:
            shots = [
                ShotParams(
                    shot_id=it * b + j,
                    prompt=PROMPT.format(i=it * b + j),
                    negative_prompt=NEGATIVE,
                    seed=it * b + j,
                    model_id=gen.model_id,
                    width=size,
                    height=size,
                    steps=args.steps,
                    guidance=args.guidance,
                    scheduler=SCHEDULER,
                    adapters=(ref,),
                )
                for j in range(b)
            ]
            errors = [o.error for o in gen.generate(shots) if o.error]
            if errors:
                raise RuntimeError(errors[0])

        timings = time_interleaved({"diffusers": plain, "shotline": ours}, args.iters, device)
        for path, t in timings.items():
            per = statistics.median(t.times)
            rows.append(
                Row(
                    arch=arch,
                    size=size,
                    batch=b,
                    path=path,
                    seconds_per_batch=per,
                    images_per_hour=b / per * 3600,
                    tflops=flops * b / per / 1e12,
                    warmup_s=t.warmup_s,
                    peak_mem_gib=t.peak_gib,
                )
            )
            console.log(f"[{arch}] {path:9s} b={b}: {per:.3f} s/batch (warm-up {t.warmup_s:.1f} s)")
        rows[-1].ratio = rows[-1].images_per_hour / rows[-2].images_per_hour
    if gen.compile_seconds is not None:
        for r in rows:
            if r.path == "shotline":
                r.compile_s = gen.compile_seconds
        console.log(f"[{arch}] shotline torch.compile, first call: {gen.compile_seconds:.1f} s")
    gen.close()
    return rows


def print_table(rows: list[Row], console: Console, title: str) -> None:
    table = Table(title=title)
    cols = ("model", "size", "batch", "path", "s/batch", "img/h", "TFLOP/s", "% peak")
    for col in (*cols, "warm-up s", "VRAM GiB", "vs plain"):
        table.add_column(col, justify="right" if col not in ("model", "path") else "left")
    for r in rows:
        table.add_row(
            r.arch,
            f"{r.size}²",
            str(r.batch),
            r.path,
            f"{r.seconds_per_batch:.3f}",
            f"{r.images_per_hour:,.0f}",
            f"{r.tflops:.4f}" if r.tflops < 1 else f"{r.tflops:.1f}",
            f"{r.pct_of_peak:.1f}" if r.pct_of_peak is not None else "",
            f"{r.warmup_s:.1f}",
            f"{r.peak_mem_gib:.1f}" if r.peak_mem_gib is not None else "",
            f"{r.ratio:.2f}x" if r.ratio is not None else "",
        )
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    p.add_argument(
        "--arch", default=None, help="tiny,sd15,sdxl (default: tiny on CPU, sd15,sdxl on CUDA)"
    )
    p.add_argument("--batches", default=None, help="comma list, e.g. 1,8,16 (default per arch)")
    p.add_argument("--size", type=int, default=None, help="image side (default per arch)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--guidance", type=float, default=7.0)
    p.add_argument("--iters", type=int, default=None, help="timed calls per row (CPU 10, CUDA 3)")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet (both paths)")
    p.add_argument("--channels-last", action="store_true", help="channels_last UNet (both)")
    p.add_argument("--fuse-qkv", action="store_true", help="fused QKV projections (shotline)")
    p.add_argument("--fp8", action="store_true", help="fp8 weight storage (shotline, Hopper)")
    p.add_argument("--batch-invariant", default="auto", choices=["auto", "on", "off"])
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--lora-weight", type=float, default=0.8)
    p.add_argument("--baseline-no-lora", action="store_true", help="plain diffusers without LoRA")
    p.add_argument(
        "--no-prompt-cache", action="store_true", help="shotline without text-embedding caching"
    )
    p.add_argument("--quick", action="store_true", help="smoke run: 2 steps, 1 timed call")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 1)")
    p.add_argument("--json-out", type=Path, default=ROOT / "var" / "bench" / "bench_generate.json")
    args = p.parse_args(argv)

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda but no CUDA device is visible")
    torch.set_num_threads(args.threads or (1 if args.device == "cpu" else torch.get_num_threads()))
    archs = (args.arch or ("tiny" if args.device == "cpu" else "sd15,sdxl")).split(",")
    for a in archs:
        if a not in ARCH_DEFAULTS:
            p.error(f"unknown arch {a!r}; choose from {', '.join(ARCH_DEFAULTS)}")
    if args.quick:
        args.steps, args.iters = 2, args.iters or 1
    args.iters = args.iters or (10 if args.device == "cpu" else 3)
    args.batches = tuple(int(x) for x in args.batches.split(",")) if args.batches else None
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    console = Console(width=160)
    device = torch.device(args.device)
    machine = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU {platform.machine()} ({torch.get_num_threads()} torch threads)"
    )
    peak = measure_matmul_peak(device, resolve_dtype(args.dtype, device))
    console.log(f"measured matmul peak: {peak:.1f} TFLOP/s")
    rows: list[Row] = []
    for arch in archs:
        rows.extend(bench_arch(arch, args, console))
        _free(device)  # this arch's pipelines are gone with bench_arch's frame
    for r in rows:
        r.pct_of_peak = 100 * r.tflops / peak
    title = (
        f"generation, {args.steps} steps + CFG, fused LoRA (tiny: r=4, else r={args.lora_rank}),"
        f" {machine}, compile={'on' if args.compile else 'off'}"
    )
    print_table(rows, console, title)
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": machine,
        "torch": torch.__version__,
        "matmul_peak_tflops": peak,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "rows": [asdict(r) for r in rows],
    }
    args.json_out.write_text(json.dumps(payload, indent=2))
    console.print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
