"""The gate on the GPU host against generation alone, in images/hour, in one process.

"gate on host" is the generate task's own code (``tasks.line.orchestrator.generate_shots``): per
GPU batch the generator, then CLIP scoring of the decoded pixels on the same device, then
finalizing on the finalize threads (policy decision, watermark embed + verify, XMP, PNG
encoding, one put of the final file, one transaction) while the next batch denoises.
"generation alone" is the same generator on the same shots with no gate and no writes.
Target: gate on host >= 0.95x generation alone. Weights are random (nothing is downloaded):
compute does not depend on weight values; the scores mean nothing.

    # CPU smoke (tiny preset + tiny CLIP at 64 px: the watermark is skipped below 256 px)
    .venv/bin/python tests/benchmarks/bench_host_gate.py
    # GPU: SD1.5 512², 30 steps, CFG, a fused LoRA, a ViT-L-14 gate (fp16) with watermark
    python tests/benchmarks/bench_host_gate.py --device cuda --arch sd15 --clip ViT-L-14

SQLite and a local blob folder stand in for Postgres and S3 (their cost is off the GPU host:
tests/benchmarks/bench_orchestration.py measures it). Writes JSON (var/bench/host_gate.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from sqlalchemy import select  # noqa: E402

from catalog import migrate  # noqa: E402
from catalog.models import Generation  # noqa: E402
from pipeline.digests import sha256_file  # noqa: E402
from pipeline.generate.generator import DiffusersGenerator, load_generator, resolve_dtype  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from pipeline.types import AdapterRef, ShotParams  # noqa: E402
from tasks.context import context_for, reset_contexts  # noqa: E402
from tasks.line.orchestrator import generate_shots  # noqa: E402
from tests.benchmarks.bench_generate import (  # noqa: E402
    NEGATIVE,
    PROMPT,
    SAMPLE_LORA,
    SCHEDULER,
    build_arch,
    make_bench_lora,
)
from tests.benchmarks.permissive_brand import write_permissive_brand  # noqa: E402

SIZES = {"tiny": 64, "sd15": 512, "sdxl": 1024}


def seed(settings: Settings, n: int, params: dict[str, Any]) -> list[int]:
    from tests.factories import make_brand, make_product, make_shot

    with context_for(settings).sessions.begin() as s:
        brand = make_brand(s, name="bench")
        ids = []
        for i in range(n):
            rev = make_product(s, brand, f"SKU-{i:05d}", title=f"Linen Pillow {i}", line=i + 2)
            ids.append(make_shot(s, rev, prompt=PROMPT.format(i=i), seed=i, **params).id)
    return ids


def build_generator(
    args: argparse.Namespace, settings: Settings
) -> tuple[DiffusersGenerator, AdapterRef]:
    device = torch.device(args.device)
    if args.arch == "tiny":
        path, sha = SAMPLE_LORA, sha256_file(SAMPLE_LORA)
        gen = load_generator(settings, "tiny")
    else:
        dtype = resolve_dtype(settings.dtype, device)
        pipe = build_arch(args.arch, settings, device, dtype)
        path = ROOT / "var" / "bench" / f"lora_{args.arch}_r16.safetensors"
        sha = make_bench_lora(pipe.unet, path, 16)
        gen = DiffusersGenerator.from_pipeline(pipe, settings, args.arch, "random-weights")
    return gen, AdapterRef(name="acme_style", sha256=sha, weight=0.8, uri=str(path))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--arch", default="tiny", choices=sorted(SIZES))
    ap.add_argument("--clip", default="tiny", help="open_clip architecture (random weights)")
    ap.add_argument("--batch", type=int, default=None, help="images per GPU batch")
    ap.add_argument("--batches", type=int, default=4, help="GPU batches per generate task")
    ap.add_argument("--steps", type=int, default=None, help="default 30 (CPU tiny: 4)")
    ap.add_argument("--iters", type=int, default=2, help="timed rounds of each path")
    ap.add_argument("--json-out", type=Path, default=ROOT / "var" / "bench" / "host_gate.json")
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    batch = args.batch or (8 if cuda else 2)
    steps = args.steps or (30 if cuda or args.arch != "tiny" else 4)
    size = SIZES[args.arch]
    console = Console()
    torch.set_num_threads(1 if not cuda else torch.get_num_threads())

    tmp = Path(tempfile.mkdtemp(prefix="shotline-host-gate-"))
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"sqlite:///{tmp / 'shotline.db'}",
        var_dir=tmp / "var",
        blob_root=tmp / "blobs",
        model_cache_dir=ROOT / "var" / "models",
        brands_dir=tmp / "brands",
        device=args.device,
        clip_model=args.clip,
        batch_size=batch,
        gpu_batches_per_task=args.batches,
        gate_on="gpu",
    )
    write_permissive_brand(settings.brands_dir)  # every image kept: the work is the same
    migrate.upgrade(settings.database_url)
    reset_contexts()
    ctx = context_for(settings)
    console.log(f"building {args.arch} {size}px (random weights) and CLIP {args.clip}")
    gen, lora = build_generator(args, settings)
    ctx._generators[gen.model_id] = gen  # the benchmark's in-memory model, as if loaded
    t0 = time.perf_counter()
    ctx.gate()
    console.log(f"gate loaded in {time.perf_counter() - t0:.1f} s")
    per_task = batch * args.batches
    params = {
        "model_id": gen.model_id,
        "width": size,
        "height": size,
        "steps": steps,
        "guidance": 7.0,
        "scheduler": SCHEDULER,
        "negative_prompt": NEGATIVE,
        "adapters": [lora.to_json()],
    }
    ids = seed(settings, per_task * (args.iters + 1), params)
    rounds = [ids[i : i + per_task] for i in range(0, len(ids), per_task)]

    def alone_shots(round_ids: list[int]) -> list[ShotParams]:
        return [
            ShotParams(
                shot_id=sid,
                prompt=PROMPT.format(i=sid),
                negative_prompt=NEGATIVE,
                seed=sid,
                model_id=gen.model_id,
                width=size,
                height=size,
                steps=steps,
                guidance=7.0,
                scheduler=SCHEDULER,
                adapters=(lora,),
            )
            for sid in round_ids
        ]

    def alone(round_ids: list[int]) -> None:
        shots = alone_shots(round_ids)
        for i in range(0, len(shots), batch):  # the task's GPU batches
            outs = gen.generate(shots[i : i + batch])
            if any(o.error for o in outs):
                raise RuntimeError(next(o.error for o in outs if o.error))

    def gated(round_ids: list[int]) -> None:
        res = generate_shots(ctx, round_ids, gate_on="gpu")
        if len(res.gated) + len(res.rejected) != len(round_ids):
            raise RuntimeError(f"not every shot was gated: {res}")

    times: dict[str, list[float]] = {"generation alone": [], "gate on host": []}
    for it, round_ids in enumerate(rounds):
        for name, fn in (("generation alone", alone), ("gate on host", gated)):
            _sync(args.device)
            t0 = time.perf_counter()
            fn(round_ids)
            _sync(args.device)
            elapsed = time.perf_counter() - t0
            if it > 0:  # round 0 warms both paths up (cuDNN autotune, caches, the policy)
                times[name].append(elapsed)
            console.log(f"round {it} {name}: {elapsed:.2f} s for {per_task} images")
    with ctx.sessions() as s:
        timings = [t for t in s.scalars(select(Generation.timings)) if "finalize_cpu_s" in t]
    result = report(args, batch, steps, size, per_task, times, timings)
    result["score_agreement"] = score_agreement(ctx, gen, alone_shots(rounds[0][:2]))
    print_table(result, console)
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(result, indent=2))
    console.print(f"JSON: {args.json_out}")


def score_agreement(ctx: Any, gen: DiffusersGenerator, shots: list[ShotParams]) -> dict[str, Any]:
    """The gate's scores from the device pixels (the GPU host: fp16 on CUDA) against the cpu
    path's (the PNG's pixels, an fp32 copy of the same CLIP on the CPU), for a few images:
    the largest difference of any score, and whether any decision differs."""
    import copy

    import numpy as np

    from pipeline.gate.clip import OpenClipEncoder
    from pipeline.gate.scores import ClipFilter

    outs = gen.generate(shots)
    the_gate = ctx.gate()
    policy = the_gate.policy_for(ctx.brand_config("bench"))
    images = [o.image for o in outs]
    texts = ["a linen pillow"] * len(outs)
    on_device = the_gate.filter.score(images, texts, policy, pixels=[o.pixels for o in outs])
    enc = the_gate.filter.encoder
    cpu_enc = OpenClipEncoder(
        copy.deepcopy(enc.model).float().cpu(), enc.preprocess, enc.tokenizer, enc.name
    )
    on_cpu = ClipFilter(cpu_enc, crop_grid=the_gate.filter.crop_grid).score(images, texts, policy)
    diffs = []
    for a, b in zip(on_device, on_cpu, strict=True):
        for x, y in ((a.safety, b.safety), (a.competitor, b.competitor), (a.logo, b.logo)):
            d = np.abs(np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64))
            diffs += [float(v) for v in d.ravel() if np.isfinite(v)]
        diffs.append(abs(a.product - b.product))
    return {
        "images": len(outs),
        "device_dtype": str(enc.dtype),
        "max_abs_score_diff": max(diffs) if diffs else 0.0,
        "pixels_on": str(outs[0].pixels.device) if outs and outs[0].pixels is not None else None,
    }


def report(
    args: argparse.Namespace,
    batch: int,
    steps: int,
    size: int,
    per_task: int,
    times: dict[str, list[float]],
    timings: list[dict[str, Any]],
) -> dict[str, Any]:
    iph = {k: per_task / statistics.median(v) * 3600 for k, v in times.items()}
    batches = {t["generate_start"]: t for t in timings}
    return {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "arch": args.arch,
        "size": size,
        "steps": steps,
        "clip": args.clip,
        "batch": batch,
        "gpu_batches_per_task": args.batches,
        "images_per_hour": {k: round(v) for k, v in iph.items()},
        "ratio_gate_on_host_vs_alone": round(iph["gate on host"] / iph["generation alone"], 3),
        "score_ms_per_image": round(
            statistics.median(t["score_s"] for t in batches.values()) / batch * 1000, 2
        ),
        "finalize_cpu_ms_per_image": round(
            statistics.median(t["finalize_cpu_s"] for t in timings) * 1000, 2
        ),
        "finalize_wall_ms_per_image": round(
            statistics.median(t["finalize_s"] for t in timings) * 1000, 2
        ),
        "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
    }


def print_table(r: dict[str, Any], console: Console) -> None:
    t = Table(
        title=f"gate on the GPU host: {r['arch']} {r['size']}px, {r['steps']} steps, "
        f"b={r['batch']} x {r['gpu_batches_per_task']}, CLIP {r['clip']} on {r['device']}"
    )
    t.add_column("metric")
    t.add_column("value", justify="right")
    for name, v in r["images_per_hour"].items():
        t.add_row(f"images/hour, {name}", f"{v:,}")
    agree = r.get("score_agreement") or {}
    t.add_row(
        "max |score diff|, device pixels vs cpu fp32 path",
        f"{agree.get('max_abs_score_diff', float('nan')):.2e} ({agree.get('device_dtype')})",
    )
    for key in (
        "ratio_gate_on_host_vs_alone",
        "score_ms_per_image",
        "finalize_cpu_ms_per_image",
        "finalize_wall_ms_per_image",
    ):
        t.add_row(key, str(r[key]))
    console.print(t)


if __name__ == "__main__":
    main()
