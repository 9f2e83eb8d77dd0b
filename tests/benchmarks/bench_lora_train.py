"""LoRA training speed: shotline's trainer vs a plain diffusers + peft loop (steps/s, memory).

Ours (``pipeline.training.trainer.LoraTrainer``) caches latents and caption embeddings once,
weights the loss by min-SNR, and on CUDA runs bf16/fp16 autocast with fp32 LoRA weights and
gradient checkpointing. The plain loop is written like diffusers' example
``train_text_to_image_lora.py``: VAE encode + text encoder every step, the same LoRA targets,
AdamW, autocast on CUDA. Weights are random (compute does not depend on them). Each path
runs in its own process, so each peak memory figure is that path's alone (CUDA: peak
allocated; CPU: peak RSS growth over the process's start-up).

    # CPU (default): the tiny preset, rank 4, batch 2, 64 px
    .venv/bin/python tests/benchmarks/bench_lora_train.py
    # CUDA: real-size SD1.5 at 512², rank 16, batch 4
    .venv/bin/python tests/benchmarks/bench_lora_train.py --device cuda

Writes JSON to var/bench/bench_lora_train.json (or ``--json-out``).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "benchmarks"))

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from pipeline.settings import Settings  # noqa: E402
from pipeline.training.config import MAX_STEPS, TrainConfig  # noqa: E402
from pipeline.training.trainer import LoraTrainer, train  # noqa: E402


@dataclass
class Row:
    path: str
    arch: str
    device: str
    resolution: int
    batch: int
    rank: int
    steps: int
    steps_per_s: float
    peak_mem_mb: float


def _images(n: int, size: int) -> list[Image.Image]:
    g = torch.Generator().manual_seed(0)
    return [
        Image.fromarray((torch.rand((size, size, 3), generator=g) * 255).byte().numpy())
        for _ in range(n)
    ]


def _pipe(arch: str, device: torch.device) -> Any:
    from bench_generate import build_arch

    settings = Settings(_env_file=None, model_cache_dir=ROOT / "var" / "models")  # type: ignore[call-arg]
    return build_arch(arch, settings, device, torch.float32).to("cpu")


def _peak_reset(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return 0.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak(device: torch.device, base: float) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    # CPU: growth of the process's peak RSS during the run (a lower bound on the run's peak).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base


def bench_ours(pipe: Any, args: argparse.Namespace, device: torch.device) -> Row:
    cfg = TrainConfig(
        rank=args.rank, alpha=args.rank, steps=args.steps + args.warmup, lr=1e-4,
        resolution=args.resolution, batch_size=args.batch,
        mixed_precision=args.precision, checkpoint_every=MAX_STEPS,
    )  # fmt: skip
    base = _peak_reset(device)
    tr = LoraTrainer(pipe, cfg, device=str(device))
    images = _images(max(8, args.batch), args.resolution)
    tr.cache(images, ["sks, a product photo"] * len(images))
    train(tr, stop_after=args.warmup)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    for step in range(args.warmup, args.warmup + args.steps):
        tr.step(step)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dt = time.perf_counter() - t
    return Row("shotline", args.arch, str(device), args.resolution, args.batch, args.rank,
               args.steps, args.steps / dt, _peak(device, base))  # fmt: skip


def plain_step(pipe: Any, opt: Any, params: list[Any], pixels: Any, ids: Any, dtype: Any) -> float:
    """One step as diffusers' example script does it: encode, noise, predict, MSE, update."""
    import torch.nn.functional as F
    from diffusers import DDPMScheduler

    sched = getattr(pipe, "_bench_sched", None) or DDPMScheduler.from_config(pipe.scheduler.config)
    pipe._bench_sched = sched
    dev = pixels.device
    with torch.autocast(dev.type, dtype=dtype, enabled=dtype != torch.float32):
        latents = pipe.vae.encode(pixels).latent_dist.sample() * pipe.vae.config.scaling_factor
        noise = torch.randn_like(latents)
        t = torch.randint(0, sched.config.num_train_timesteps, (latents.shape[0],), device=dev)
        noisy = sched.add_noise(latents, noise, t)
        cond = pipe.text_encoder(ids, return_dict=False)[0]
        pred = pipe.unet(noisy, t, cond, return_dict=False)[0]
        loss = F.mse_loss(pred.float(), noise.float())
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def bench_plain(pipe: Any, args: argparse.Namespace, device: torch.device) -> Row:
    from peft import LoraConfig

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision, torch.float32)
    dtype = dtype if device.type == "cuda" else torch.float32
    base = _peak_reset(device)
    for comp in (pipe.unet, pipe.vae, pipe.text_encoder):
        comp.requires_grad_(False)
        comp.to(device, dtype=dtype)
    targets = ["to_k", "to_q", "to_v", "to_out.0"]
    pipe.unet.add_adapter(
        LoraConfig(
            r=args.rank, lora_alpha=args.rank, init_lora_weights="gaussian", target_modules=targets
        )
    )
    params = [p for p in pipe.unet.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    if device.type == "cuda":
        pipe.unet.enable_gradient_checkpointing()
    opt = torch.optim.AdamW(params, lr=1e-4)
    pixels = torch.rand((args.batch, 3, args.resolution, args.resolution), device=device) * 2 - 1
    tok = pipe.tokenizer
    ids = tok(
        ["sks, a product photo"] * args.batch,
        padding="max_length",
        max_length=tok.model_max_length,
        return_tensors="pt",
    ).input_ids.to(device)
    for _ in range(args.warmup):
        plain_step(pipe, opt, params, pixels.to(dtype), ids, dtype)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    for _ in range(args.steps):
        plain_step(pipe, opt, params, pixels.to(dtype), ids, dtype)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dt = time.perf_counter() - t
    return Row("diffusers+peft", args.arch, str(device), args.resolution, args.batch, args.rank,
               args.steps, args.steps / dt, _peak(device, base))  # fmt: skip


def _child(argv: list[str], which: str) -> Row:
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "row.json"
        cmd = [sys.executable, __file__, *argv, "--only", which, "--json-out", str(out)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return Row(**json.loads(out.read_text()))


def main(argv: list[str] | None = None) -> list[Row]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--arch", default=None, help="tiny or sd15 (default: tiny on CPU, sd15 on CUDA)")
    p.add_argument("--resolution", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--rank", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="timed steps (CPU 20, CUDA 30)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "no"])
    p.add_argument(
        "--json-out", type=Path, default=ROOT / "var" / "bench" / "bench_lora_train.json"
    )
    p.add_argument("--only", choices=["ours", "plain"], help=argparse.SUPPRESS)  # a child run
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        p.error("--device cuda but no CUDA device is visible")
    args.arch = args.arch or ("sd15" if cuda else "tiny")
    args.resolution = args.resolution or (512 if args.arch == "sd15" else 64)
    args.batch = args.batch or (4 if cuda else 2)
    args.rank = args.rank or (16 if cuda else 4)
    args.steps = args.steps or (30 if cuda else 20)
    if not cuda:
        torch.set_num_threads(1)
    device = torch.device(args.device)
    if args.only:
        fn = bench_ours if args.only == "ours" else bench_plain
        row = fn(_pipe(args.arch, device), args, device)
        args.json_out.write_text(json.dumps(asdict(row)))
        return [row]
    rows = [_child(argv or sys.argv[1:], which) for which in ("ours", "plain")]
    table = Table(title=f"LoRA training, {args.arch} {args.resolution}² on {device}")
    for col in ("path", "batch", "rank", "steps/s", "peak MB"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r.path, str(r.batch), str(r.rank), f"{r.steps_per_s:.2f}", f"{r.peak_mem_mb:.0f}"
        )
    table.add_row("ratio", "", "", f"{rows[0].steps_per_s / rows[1].steps_per_s:.2f}x", "")
    Console().print(table)
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(device) if cuda else None}  # fmt: skip
    args.json_out.write_text(
        json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=2)
    )
    return rows


if __name__ == "__main__":
    main()
