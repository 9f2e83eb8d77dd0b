"""Hires benchmark (GPU): images per hour at the output size (generation at the model's
native size + the second pass: upscale, low-strength img2img, tiled VAE) against generation
alone at the native size, through ``DiffusersGenerator.generate`` on a real-size pipeline
(random weights: compute does not depend on them; nothing is downloaded).

    python tests/benchmarks/bench_hires.py --device cuda --arch sd15 --out 2048
    python tests/benchmarks/bench_hires.py --device cuda --arch sdxl --out 2048
    python tests/benchmarks/bench_hires.py --quick          # CPU smoke run, tiny preset

No GPU numbers exist yet: run it where a device is lent (tests/benchmarks/gpu/run_all.sh
hires). Writes JSON to var/bench/hires.json (or ``--json-out``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

NATIVE = {"sd15": 512, "sdxl": 1024, "tiny": 64}


def _shots(args: argparse.Namespace, native: int, batch: int) -> list[Any]:
    from pipeline.types import HiresSpec, ShotParams

    base = [
        ShotParams(
            i,
            f"product photo {i}",
            "blurry",
            100 + i,
            "bench",
            native,
            native,
            args.steps,
            6.0,
            "euler",
        )
        for i in range(batch)
    ]
    if args.out == native:
        return base
    spec = HiresSpec(args.out, args.out, args.strength, args.hires_steps, args.upscale)
    return [replace(s, hires=spec) for s in base]


def _timed(gen: Any, shots: list[Any], iters: int) -> tuple[float, float]:
    import torch

    gen.generate(shots)  # warm-up
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        outs = gen.generate(shots)
        times.append(time.perf_counter() - t0)
        errors = [o.error for o in outs if o.error]
        if errors:
            raise SystemExit(f"generation failed: {errors[0]}")
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
    return statistics.median(times), peak


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--arch", default="sd15", choices=sorted(NATIVE))
    p.add_argument("--out", type=int, default=2048, help="output side")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--hires-steps", type=int, default=20)
    p.add_argument("--strength", type=float, default=0.35)
    p.add_argument("--upscale", default="lanczos", choices=["lanczos", "latent"])
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    p.add_argument("--quick", action="store_true", help="CPU smoke run: tiny, 64 -> 128")
    p.add_argument("--json-out", type=Path, default=ROOT / "var" / "bench" / "hires.json")
    args = p.parse_args(argv)
    if args.quick:
        args.arch, args.out, args.steps, args.hires_steps, args.iters = "tiny", 128, 2, 4, 1
    import torch
    from bench_generate import build_arch

    from pipeline.generate.generator import DiffusersGenerator, resolve_dtype
    from pipeline.settings import Settings

    device = torch.device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        device=args.device,
        dtype=args.dtype,
        model_cache_dir=ROOT / "var" / "models",
        batch_size=args.batch,
        batch_invariant="off",
    )
    native = NATIVE[args.arch]
    gen = DiffusersGenerator.from_pipeline(
        build_arch(args.arch, settings, device, dtype), settings, "bench"
    )
    rows = []
    for label, out in (("native", native), ("hires", args.out)):
        shots = _shots(replace_args(args, out=out), native, args.batch)
        sec, peak = _timed(gen, shots, args.iters)
        rows.append(
            {
                "path": label,
                "size": out,
                "batch": args.batch,
                "seconds": sec,
                "img_per_h": 3600 * args.batch / sec,
                "peak_gib": peak,
            }
        )
    rows[1]["vs_native"] = rows[1]["img_per_h"] / rows[0]["img_per_h"]
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor()
    table = Table(
        title=f"{args.arch} {native}² -> {args.out}² ({args.upscale}, strength {args.strength}, "
        f"{args.hires_steps} steps), {args.steps} steps, batch {args.batch}, {device_name}"
    )
    for col in ("path", "size", "s / batch", "img/h", "peak GiB", "vs native"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["path"],
            f"{r['size']}²",
            f"{r['seconds']:.2f}",
            f"{r['img_per_h']:.0f}",
            f"{r['peak_gib']:.1f}",
            f"{r.get('vs_native', 1.0):.2f}x",
        )
    Console().print(table)
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": device_name, "args": {k: str(v) for k, v in vars(args).items()}}
    args.json_out.write_text(json.dumps({**payload, "rows": rows}, indent=2))
    print(f"wrote {args.json_out}")
    return 0


def replace_args(args: argparse.Namespace, **kw: Any) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), **kw})


if __name__ == "__main__":
    raise SystemExit(main())
