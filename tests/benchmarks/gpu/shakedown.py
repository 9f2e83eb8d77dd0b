"""GPU shakedown: every generator option runs, and the per-image seed guarantee holds.

Checks, each a row of the table and the JSON (``--json-out``):

- ``option:<name>``: a batch of 2 with a pinned, fused LoRA through ``DiffusersGenerator.generate``
  under each option (fp16, bf16, fp8 storage, CPU offload, torch.compile, QKV fusion);
  passes when no shot fails and no image is blank; reports the pixel difference against
  the default options (fp16 on CUDA), e.g. what fp8 storage costs in image terms.
- ``tolerance``: the fp16 noise floor, measured: max/mean pixel difference of one shot
  rendered in fp16 against fp32.
- ``alone_vs_batch8``: the same shot alone and inside a batch of 8 with other neighbours;
  passes when the difference is within the measured tolerance (exact on CPU, where the
  generator runs batch-invariant).
- ``oom_split``: a real CUDA OOM: the allocator is capped (``set_per_process_memory_fraction``)
  just above what one image needs, a batch of 8 is asked for, and it must come back split
  with every image made. On CPU there is no CUDA OOM: the check raises one from the
  pipeline call instead, so only the split logic runs (marked ``simulated``).
- ``lora_switch``: 10 fuse/unfuse switches between two adapters, then an image and the
  base weights against a freshly built worker, within the measured tolerance.

Random weights at real size (SD1.5 for most checks, SDXL for the OOM split), nothing
downloaded. ``--device cpu --tiny`` runs the same code on the tiny preset in a minute, so
a GPU session does not find a typo.

    python tests/benchmarks/gpu/shakedown.py --device cuda
    python tests/benchmarks/gpu/shakedown.py --device cpu --tiny --skip compile
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # bench_generate: the real-size builders

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_generate import ROOT, SAMPLE_LORA, build_arch, make_bench_lora  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from rich.text import Text  # noqa: E402

from pipeline.digests import sha256_file  # noqa: E402
from pipeline.generate.generator import DiffusersGenerator  # noqa: E402
from pipeline.generate.lora import write_random_lora  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from pipeline.types import AdapterRef, ShotParams  # noqa: E402

OPTIONS: dict[str, dict[str, Any]] = {
    "fp16": {"dtype": "fp16"},
    "bf16": {"dtype": "bf16"},
    "fp8_storage": {"fp8_storage": True},
    "cpu_offload": {"cpu_offload": True},
    "compile": {"compile_unet": True},
    "fuse_qkv": {"fuse_qkv": True},
}


class Ctx:
    """What every check needs: device, sizes, adapters and a way to build a generator."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device(args.device)
        self.arch = "tiny" if args.tiny else "sd15"
        self.size = 64 if args.tiny else 512
        self.steps = args.steps
        self.default_dtype = "fp16" if self.device.type == "cuda" else "fp32"
        self.loras = self._adapters()
        self._reference: np.ndarray | None = None

    def reference(self) -> np.ndarray:
        """Shot 1 with adapter 0 under the default options: what each option is compared to."""
        if self._reference is None:
            gen = self.generator()
            (self._reference,) = pixels(gen, [self.shot(1)])
            free(gen)
        return self._reference

    def settings(self, **over: Any) -> Settings:
        base: dict[str, Any] = {
            "var_dir": ROOT / "var",
            "model_cache_dir": ROOT / "var" / "models",
            "device": self.args.device,
            "dtype": self.default_dtype,
            "batch_size": 8,
        }
        return Settings(_env_file=None, **{**base, **over})  # type: ignore[call-arg]

    def generator(self, arch: str | None = None, **over: Any) -> DiffusersGenerator:
        s = self.settings(**over)
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[s.dtype]
        pipe = build_arch(arch or self.arch, s, self.device, dtype)
        return DiffusersGenerator.from_pipeline(pipe, s, arch or self.arch, "random-weights")

    def shot(self, seed: int, adapters: int | None = 0, size: int | None = None) -> ShotParams:
        return ShotParams(
            shot_id=seed,
            prompt=f"studio product photo of item {seed}, on a seamless white background",
            negative_prompt="blurry, text, watermark",
            seed=seed,
            model_id=self.arch,
            width=size or self.size,
            height=size or self.size,
            steps=self.steps,
            guidance=7.0,
            scheduler="euler",
            adapters=() if adapters is None else (self.loras[adapters],),
        )

    def _adapters(self) -> list[AdapterRef]:
        folder = ROOT / "var" / "bench" / "shakedown"
        refs = []
        for i in range(2):
            path = folder / f"{self.arch}_style{i}.safetensors"
            if self.arch == "tiny" and i == 0:
                path, sha = SAMPLE_LORA, sha256_file(SAMPLE_LORA)
            elif self.arch == "tiny":
                from diffusers import UNet2DConditionModel

                from pipeline.generate.tiny_preset import ensure_tiny_model

                unet = UNet2DConditionModel.from_pretrained(
                    ensure_tiny_model(ROOT / "var" / "models") / "unet"
                )
                sha = write_random_lora(unet, path, rank=4, seed=100 + i)
            else:
                s = self.settings()
                unet = build_arch(self.arch, s, self.device, torch.float32).unet
                sha = make_bench_lora(unet, path, rank=16, seed=100 + i)
            refs.append(AdapterRef(name=f"style{i}", sha256=sha, weight=0.8, uri=str(path)))
        return refs


def pixels(gen: DiffusersGenerator, shots: list[ShotParams]) -> list[np.ndarray]:
    outs = gen.generate(shots)
    errors = [o.error for o in outs if o.error]
    if errors:
        raise RuntimeError(errors[0])
    return [np.asarray(o.image, dtype=np.int16) for o in outs]


def diff(a: np.ndarray, b: np.ndarray) -> tuple[int, float]:
    d = np.abs(a - b)
    return int(d.max()), float(d.mean())


def free(*gens: DiffusersGenerator) -> None:
    for g in gens:
        g.close()
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- checks ----------------------------------------------------------------------------


def check_option(ctx: Ctx, name: str) -> dict[str, Any]:
    gen = ctx.generator(**OPTIONS[name])
    try:
        imgs = pixels(gen, [ctx.shot(1), ctx.shot(2)])
        blank = [i for i, im in enumerate(imgs) if im.std() == 0]
        mx, mean = diff(imgs[0], ctx.reference())
        detail: dict[str, Any] = {"blank": blank, "lora_fused": gen.lora.fused}
        detail["vs_default_max"], detail["vs_default_mean"] = mx, round(mean, 3)
        if name in ("fp8_storage", "cpu_offload"):  # both need CUDA; ignored elsewhere
            on_cuda = gen.device.type == "cuda"
            detail["applied"] = gen._fp8_capable() if name == "fp8_storage" else on_cuda
        if gen.compile_seconds is not None:
            detail["compile_first_call_s"] = round(gen.compile_seconds, 1)
        return {"ok": not blank, **detail}
    finally:
        free(gen)


def check_tolerance(ctx: Ctx) -> dict[str, Any]:
    lo = ctx.generator(dtype="fp16")
    (a,) = pixels(lo, [ctx.shot(5)])
    free(lo)
    hi = ctx.generator(dtype="fp32")
    (b,) = pixels(hi, [ctx.shot(5)])
    free(hi)
    mx, mean = diff(a, b)
    ctx.tolerance = (mx, mean)  # type: ignore[attr-defined]
    return {"ok": True, "fp16_vs_fp32_max": mx, "fp16_vs_fp32_mean": round(mean, 3)}


def _within(ctx: Ctx, mx: int, mean: float) -> bool:
    tol_max, tol_mean = getattr(ctx, "tolerance", (0, 0.0))
    if ctx.device.type == "cpu":
        return mx == 0  # batch-invariant on the CPU: exact
    return mx <= max(tol_max, 1) and mean <= max(tol_mean, 0.05)


def check_alone_vs_batch(ctx: Ctx) -> dict[str, Any]:
    gen = ctx.generator()
    try:
        (alone,) = pixels(gen, [ctx.shot(7)])
        batch = pixels(gen, [ctx.shot(s) for s in (11, 12, 13, 7, 14, 15, 16, 17)])
        mx, mean = diff(alone, batch[3])
        return {"ok": _within(ctx, mx, mean), "max": mx, "mean": round(mean, 3)}
    finally:
        free(gen)


def check_oom_split(ctx: Ctx) -> dict[str, Any]:
    arch = "tiny" if ctx.args.tiny else "sdxl"
    size = 64 if ctx.args.tiny else ctx.args.oom_size
    gen = ctx.generator(arch=arch, batch_size=8)
    steps = min(ctx.steps, 4)  # the split is what is tested, not the image
    shots = [replace(ctx.shot(40 + i, None, size), model_id=arch, steps=steps) for i in range(8)]
    simulated = ctx.device.type != "cuda"
    try:
        if simulated:
            _fake_oom_above(gen, 2)
        else:
            _cap_memory_above_one(gen, shots[0], ctx.device)
        t0 = time.perf_counter()
        outs = gen.generate(shots)
        sizes = sorted({o.timings.get("batch_size", 0.0) for o in outs if o.error is None})
        errors = [o.error for o in outs if o.error]
        return {
            "ok": not errors and bool(sizes) and max(sizes) < 8,
            "simulated": simulated,
            "batch_sizes_run": sizes,
            "errors": errors[:1],
            "seconds": round(time.perf_counter() - t0, 1),
        }
    finally:
        if not simulated:
            torch.cuda.set_per_process_memory_fraction(1.0, ctx.device)
        free(gen)


def _fake_oom_above(gen: DiffusersGenerator, limit: int) -> None:
    real = gen._run_batch

    def run(chunk: list[ShotParams]) -> Any:
        if len(chunk) > limit:
            raise torch.cuda.OutOfMemoryError(f"simulated: batch {len(chunk)} > {limit}")
        return real(chunk)

    gen._run_batch = run  # type: ignore[method-assign]


def _cap_memory_above_one(gen: DiffusersGenerator, shot: ShotParams, device: torch.device) -> None:
    """Cap the allocator at weights + 2.5x one image's working memory: b=8 must OOM."""
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    gen.generate([shot])
    one = torch.cuda.max_memory_allocated(device) - base
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(min(1.0, (base + 2.5 * one) / total), device)


def check_lora_switch(ctx: Ctx) -> dict[str, Any]:
    gen = ctx.generator()
    try:
        for i in range(10):
            pixels(gen, [ctx.shot(20, adapters=i % 2)])
        (after,) = pixels(gen, [ctx.shot(21, adapters=0)])
        gen.lora.activate([])
        base_after = {k: v.detach().cpu().clone() for k, v in _base_weights(gen).items()}
    finally:
        free(gen)
    fresh = ctx.generator()
    try:
        (ref,) = pixels(fresh, [ctx.shot(21, adapters=0)])
        fresh.lora.activate([])
        drift = max(
            float((base_after[k].float() - v.detach().cpu().float()).abs().max())
            for k, v in _base_weights(fresh).items()
        )
    finally:
        free(fresh)
    mx, mean = diff(after, ref)
    return {"ok": _within(ctx, mx, mean) and drift == 0.0, "max": mx, "weight_drift": drift}


def _base_weights(gen: DiffusersGenerator) -> dict[str, torch.Tensor]:
    return {
        k.replace(".base_layer", ""): v
        for k, v in gen.pipe.unet.state_dict().items()
        if "lora_" not in k
    }


# --- driver ----------------------------------------------------------------------------


def run_checks(ctx: Ctx, skip: set[str], console: Console) -> list[dict[str, Any]]:
    checks: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        (f"option:{n}", lambda n=n: check_option(ctx, n)) for n in OPTIONS
    ]
    checks += [
        ("tolerance", lambda: check_tolerance(ctx)),
        ("alone_vs_batch8", lambda: check_alone_vs_batch(ctx)),
        ("oom_split", lambda: check_oom_split(ctx)),
        ("lora_switch", lambda: check_lora_switch(ctx)),
    ]
    rows = []
    for name, fn in checks:
        if name in skip or name.split(":")[-1] in skip:
            rows.append({"check": name, "ok": None, "skipped": True})
            continue
        t0 = time.perf_counter()
        try:
            row = {"check": name, **fn()}
        except Exception as exc:  # a shakedown reports every failure, then carries on
            row = {"check": name, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
            row["trace"] = traceback.format_exc(limit=6)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        console.log(f"{name}: {'ok' if row['ok'] else 'FAIL'} {_brief(row)}", markup=False)
        rows.append(row)
    return rows


def _brief(row: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in row.items() if k not in ("check", "ok", "trace"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="the tiny preset at 64² (CPU smoke run)")
    p.add_argument("--steps", type=int, default=None, help="default 10 (tiny: 2)")
    p.add_argument("--oom-size", type=int, default=2048, help="SDXL side for the OOM split")
    p.add_argument("--skip", default="", help="comma list of checks or option names")
    p.add_argument("--json-out", type=Path, default=ROOT / "var" / "bench" / "shakedown.json")
    args = p.parse_args(argv)
    args.steps = args.steps or (2 if args.tiny else 10)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda but no CUDA device is visible")
    torch.manual_seed(0)
    console = Console(width=160)
    ctx = Ctx(args)
    rows = run_checks(ctx, {s for s in args.skip.split(",") if s}, console)
    table = Table(title=f"shakedown on {args.device} ({ctx.arch}, {args.steps} steps)")
    for col in ("check", "result", "detail"):
        table.add_column(col)
    for r in rows:
        result = "skipped" if r.get("skipped") else ("ok" if r["ok"] else "FAIL")
        table.add_row(Text(r["check"]), Text(result), Text(_brief(r)))
    console.print(table)
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps({"device": args.device, "rows": rows}, indent=2))
    console.print(f"wrote {args.json_out}", markup=False)
    return 0 if all(r["ok"] is not False for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
