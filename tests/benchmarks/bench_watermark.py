"""Watermark benchmark: robustness, speed and false positives per method and strength.

    .venv/bin/python tests/benchmarks/bench_watermark.py [--images 200] [--size 1024]
        [--fp-images 1000] [--fp-size 256] [--workers 1] [--configs LABEL,...] [--json-out P]

Test images are generated (deterministic): half flat white packshot backgrounds (pure 255)
with one shaded object and a soft shadow, half textured photo-like scenes. For each config
(``pipeline.gate.watermark.WatermarkConfig`` label: method-channel-xSTRENGTH[-hHEADROOM]) each image
is watermarked with its own shot id, then attacked; the decoder is the production one
(as-is, then rescaled back up by 4/3, 2, 1.5, 1.25), it never sees the original size.

Attacks: PNG (none), JPEG q95/q85/q75 (Pillow defaults, i.e. 4:2:0 chroma subsampling, as a
shop's re-encoder would), downscale to 75 % and 50 % (INTER_AREA), a centre crop keeping 90 %
of width and height, PNG -> WebP (Pillow default q80).

False positives: ``--fp-images`` unwatermarked images (``--fp-size`` px, smaller than the
1024 px test images to save time; the check code, not the size, sets the FP rate) decoded
with each config, rescale attempts included. Any verified id counts.

``--keep-white``: the white packshots keep every pure-white pixel at RGB 255 after embedding,
as a ``white_background`` slot's shot does (``KeepPixels.white``).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFilter  # noqa: E402

from pipeline.gate import watermark as wm  # noqa: E402

cv2.setNumThreads(1)

DEFAULT_CONFIGS = (
    "dwtDct-u-x1",  # imwatermark's default (U channel): the baseline
    "dwtDct-y-x1",
    "dwtDct-y-x1-h8",
    "dwtDctSvd-u-x1",  # imwatermark's dwtDctSvd default channel
    "dwtDctSvd-y-x0.5",
    "dwtDctSvd-y-x0.75",
    "dwtDctSvd-y-x1",
    "dwtDctSvd-y-x1.5",
    "dwtDctSvd-y-x1-imw",  # the package's own loops: same bitstream, for timing
)
ATTACKS = ("png", "jpeg95", "jpeg85", "jpeg75", "resize75", "resize50", "crop10", "webp")
SHOT_ID_BASE = 1_000_000


def make_image(i: int, size: int) -> Image.Image:
    """Image ``i``: even = white packshot with an object, odd = textured scene."""
    rng = np.random.default_rng(1000 + i)
    if i % 2 == 0:
        im = Image.new("RGB", (size, size), (255, 255, 255))
        # A soft grey contact shadow, as on real packshots.
        shadow = Image.new("L", (size, size), 0)
        sd = ImageDraw.Draw(shadow)
        cx, cy = rng.uniform(0.35, 0.65, 2) * size
        rx, ry = rng.uniform(0.12, 0.3, 2) * size
        sd.ellipse((cx - rx, cy + ry * 0.8, cx + rx, cy + ry * 1.1), fill=90)
        shadow = shadow.filter(ImageFilter.GaussianBlur(size / 60))
        im.paste((200, 200, 200), (0, 0), shadow)
        # The object: a shaded shape (vertical gradient) with a highlight.
        color = rng.integers(20, 230, 3)
        grad = np.linspace(1.15, 0.7, size)[:, None, None] * color[None, None, :]
        obj = Image.fromarray(np.broadcast_to(grad, (size, size, 3)).clip(0, 255).astype("uint8"))
        mask = Image.new("L", (size, size), 0)
        md = ImageDraw.Draw(mask)
        if rng.random() < 0.5:
            md.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=255)
        else:
            md.rounded_rectangle((cx - rx, cy - ry, cx + rx, cy + ry), radius=size // 30, fill=255)
        im.paste(obj, (0, 0), mask)
        return im
    low = rng.normal(128, 50, (12, 12, 3)).clip(0, 255).astype("uint8")
    base = np.asarray(Image.fromarray(low).resize((size, size), Image.BICUBIC), dtype=np.float32)
    noise = rng.normal(0, 6, (size, size, 1)).astype(np.float32)
    arr = (base + noise).clip(0, 255).astype("uint8")
    im = Image.fromarray(arr)
    d = ImageDraw.Draw(im)
    for _ in range(6):
        x, y = rng.integers(0, size, 2)
        r = int(rng.integers(size // 20, size // 6))
        d.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    return im


def _encode(im: Image.Image, fmt: str, **kw: Any) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    out = Image.open(io.BytesIO(buf.getvalue()))
    out.load()
    return out.convert("RGB")


def attack(im: Image.Image, name: str) -> Image.Image:
    w, h = im.size
    if name == "png":
        return _encode(im, "PNG", compress_level=1)  # lossless either way; level 1 is fast
    if name.startswith("jpeg"):
        return _encode(im, "JPEG", quality=int(name[4:]))
    if name.startswith("resize"):
        f = int(name[6:]) / 100
        arr = cv2.resize(np.asarray(im), (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
        return Image.fromarray(arr)
    if name == "crop10":
        dx, dy = round(w * 0.05), round(h * 0.05)
        return im.crop((dx, dy, w - dx, h - dy))
    if name == "webp":
        return _encode(im, "WEBP")
    raise ValueError(name)


def psnr(a: Image.Image, b: Image.Image) -> float:
    return float(cv2.PSNR(np.asarray(a), np.asarray(b)))


def run_image(args: tuple[int, int, tuple[str, ...], bool]) -> list[dict[str, Any]]:
    i, size, labels, keep_white = args
    original = make_image(i, size)
    shot_id = SHOT_ID_BASE + i
    rows = []
    for label in labels:
        cfg = wm.WatermarkConfig.from_label(label)
        assert cfg is not None, label
        t0 = time.perf_counter()
        marked = wm.embed(original, shot_id, cfg)
        if keep_white and i % 2 == 0:  # a white_background slot: RGB 255 put back
            marked = dataclasses.replace(marked, image=wm.restore_white(marked.image, original))
        t_enc = time.perf_counter() - t0
        row: dict[str, Any] = {
            "image": i,
            "kind": "white" if i % 2 == 0 else "textured",
            "config": label,
            "encode_s": t_enc,
            "psnr": psnr(original, marked.image),
        }
        for name in ATTACKS:
            attacked = attack(marked.image, name)
            t0 = time.perf_counter()
            res = wm.decode(attacked, cfg)
            t_dec = time.perf_counter() - t0
            if name == "png":
                row["decode_s"] = t_dec
            row[f"{name}_ok"] = res.verified and res.shot_id == shot_id
            row[f"{name}_wrong"] = res.verified and res.shot_id != shot_id
            row[f"{name}_bitacc"] = wm.bit_accuracy(res.bits, shot_id)
        rows.append(row)
    return rows


def run_fp(args: tuple[int, int, tuple[str, ...]]) -> dict[str, int]:
    i, size, labels = args
    im = make_image(10_000 + i, size)
    out = {}
    for label in labels:
        cfg = wm.WatermarkConfig.from_label(label)
        assert cfg is not None
        out[label] = int(wm.decode(im, cfg).verified)
    return out


def summarise(rows: list[dict[str, Any]], labels: tuple[str, ...]) -> list[dict[str, Any]]:
    out = []
    for label in labels:
        rs = [r for r in rows if r["config"] == label]
        s: dict[str, Any] = {
            "config": label,
            "images": len(rs),
            "encode_s": float(np.mean([r["encode_s"] for r in rs])),
            "decode_s": float(np.mean([r["decode_s"] for r in rs])),
            "psnr_white": float(np.mean([r["psnr"] for r in rs if r["kind"] == "white"] or [0])),
            "psnr_textured": float(
                np.mean([r["psnr"] for r in rs if r["kind"] == "textured"] or [0])
            ),
        }
        for name in ATTACKS:
            s[f"{name}_recovery"] = float(np.mean([r[f"{name}_ok"] for r in rs]))
            s[f"{name}_recovery_white"] = float(
                np.mean([r[f"{name}_ok"] for r in rs if r["kind"] == "white"] or [0])
            )
            s[f"{name}_bitacc"] = float(np.mean([r[f"{name}_bitacc"] for r in rs]))
            s[f"{name}_wrong_ids"] = int(sum(r[f"{name}_wrong"] for r in rs))
        out.append(s)
    return out


def print_table(summary: list[dict[str, Any]], fps: dict[str, int], n_fp: int) -> None:
    print("\npayload recovery % (white-background subset in brackets); bit accuracy %")
    head = f"{'config':20s}" + "".join(f"{a:>15s}" for a in ATTACKS)
    print(head)
    for s in summary:
        line = f"{s['config']:20s}"
        for a in ATTACKS:
            line += f"{100 * s[a + '_recovery']:6.1f} [{100 * s[a + '_recovery_white']:5.1f}] "
        print(line)
        line = f"{'  bit acc':20s}"
        for a in ATTACKS:
            line += f"{100 * s[a + '_bitacc']:14.1f} "
        print(line)
    print(
        f"\n{'config':20s}{'enc s':>8s}{'dec s':>8s}{'enc+dec':>9s}{'PSNR w':>8s}"
        f"{'PSNR t':>8s}{'FP':>10s}{'wrong ids':>10s}"
    )
    for s in summary:
        wrong = sum(s[f"{a}_wrong_ids"] for a in ATTACKS)
        fp = fps.get(s["config"])
        fp_txt = f"{fp}/{n_fp}" if fp is not None else "-"
        print(
            f"{s['config']:20s}{s['encode_s']:8.3f}{s['decode_s']:8.3f}"
            f"{s['encode_s'] + s['decode_s']:9.3f}{s['psnr_white']:8.1f}"
            f"{s['psnr_textured']:8.1f}{fp_txt:>10s}{wrong:10d}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--fp-images", type=int, default=1000)
    ap.add_argument("--fp-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--configs", default=",".join(DEFAULT_CONFIGS))
    ap.add_argument(
        "--keep-white",
        action="store_true",
        help="white packshots keep every pure-white pixel at 255 after embedding "
        "(a white_background slot's shot): the mark lives in the object and shadow only",
    )
    ap.add_argument("--json-out", type=Path, default=ROOT / "var" / "bench" / "watermark.json")
    args = ap.parse_args()
    labels = tuple(c for c in args.configs.split(",") if c)
    for label in labels:
        if wm.WatermarkConfig.from_label(label) is None:
            ap.error(f"bad config label {label!r}")

    t0 = time.time()
    jobs = [(i, args.size, labels, args.keep_white) for i in range(args.images)]
    fp_jobs = [(i, args.fp_size, labels) for i in range(args.fp_images)]
    rows: list[dict[str, Any]] = []
    fps = dict.fromkeys(labels, 0)
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            for part in pool.map(run_image, jobs, chunksize=1):
                rows.extend(part)
            for fp in pool.map(run_fp, fp_jobs, chunksize=8):
                for k, v in fp.items():
                    fps[k] += v
    else:
        for n, job in enumerate(jobs, 1):
            rows.extend(run_image(job))
            if n % max(1, len(jobs) // 10) == 0:
                print(f"  {n}/{len(jobs)} images ({time.time() - t0:.0f}s)", file=sys.stderr)
        for job in fp_jobs:
            for k, v in run_fp(job).items():
                fps[k] += v
    summary = summarise(rows, labels)
    print_table(summary, fps, args.fp_images)
    elapsed = time.time() - t0
    print(
        f"\n{args.images} images at {args.size}px, {args.fp_images} FP images at "
        f"{args.fp_size}px, {args.workers} worker(s), {os.cpu_count()} CPUs: {elapsed:.0f}s"
    )
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(
        json.dumps(
            {
                "params": {k: str(v) for k, v in vars(args).items()},
                "cpus": os.cpu_count(),
                "elapsed_s": elapsed,
                "summary": summary,
                "false_positives": fps,
                "rows": rows,
            },
            indent=1,
        )
    )
    print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
