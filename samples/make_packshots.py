"""Draw the synthetic packshots in samples/packshots/ and the ground-truth masks they came from.

    python samples/make_packshots.py [--size 512] [--out samples/packshots]

Four studio-style packshots, each drawn 4x larger and box-downsampled (anti-aliased edges like a
photo's), on a near-white background with a little sensor noise:

- ``mug.png``: a glazed mug with a solid handle;
- ``bottle.png``: a green bottle with a white label *inside* its outline (the label is the
  background's colour: the cutout must keep it as product);
- ``pillow.png``: a linen pillow with a near-white patch;
- ``ball.png``: an RGBA ball on a transparent background (the cutout must use its alpha).

``<name>_mask.png`` is the truth: the drawn shape, 255 where at least half a pixel is product.
These are drawings, not product photos; deterministic (fixed seed) so re-running gives the
same bytes.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SS = 4  # supersampling factor
BACKGROUND = (250, 250, 248)
Drawing = tuple[Image.Image, Image.Image]  # (RGB or RGBA image, L mask)


def _canvas(size: int) -> tuple[Image.Image, Image.Image, ImageDraw.ImageDraw, ImageDraw.ImageDraw]:
    big = size * SS
    img = Image.new("RGB", (big, big), BACKGROUND)
    mask = Image.new("L", (big, big), 0)
    return img, mask, ImageDraw.Draw(img), ImageDraw.Draw(mask)


def _finish(img: Image.Image, mask: Image.Image, size: int, seed: int) -> Drawing:
    small = img.resize((size, size), Image.Resampling.BOX)
    truth = mask.resize((size, size), Image.Resampling.BOX).point(lambda v: 255 if v >= 128 else 0)
    rng = np.random.default_rng(seed)
    px = np.asarray(small, dtype=np.int16) + rng.integers(-2, 3, (size, size, 3))
    return Image.fromarray(np.clip(px, 0, 255).astype(np.uint8)), truth


def _shape(d: ImageDraw.ImageDraw, m: ImageDraw.ImageDraw, kind: str, box: list[float], **kw):
    getattr(d, kind)(box, **kw)
    getattr(m, kind)(box, fill=255, **{k: v for k, v in kw.items() if k == "radius"})


def draw_mug(size: int = 512) -> Drawing:
    img, mask, d, m = _canvas(size)
    s = size * SS / 512
    body = [150 * s, 140 * s, 330 * s, 400 * s]
    handle = [300 * s, 200 * s, 390 * s, 330 * s]
    _shape(d, m, "ellipse", handle, fill=(150, 40, 45))
    _shape(d, m, "rounded_rectangle", body, fill=(170, 48, 52), radius=30 * s)
    d.rectangle([165 * s, 160 * s, 190 * s, 380 * s], fill=(205, 110, 110))  # glaze highlight
    return _finish(img, mask, size, seed=1)


def draw_bottle(size: int = 512) -> Drawing:
    img, mask, d, m = _canvas(size)
    s = size * SS / 512
    _shape(
        d,
        m,
        "rounded_rectangle",
        [226 * s, 60 * s, 286 * s, 170 * s],
        fill=(30, 90, 50),
        radius=12 * s,
    )
    _shape(
        d,
        m,
        "rounded_rectangle",
        [176 * s, 150 * s, 336 * s, 460 * s],
        fill=(35, 110, 60),
        radius=40 * s,
    )
    # The label: exactly the background's white, inset so glass shows on both sides.
    d.rectangle([196 * s, 250 * s, 316 * s, 380 * s], fill=BACKGROUND)
    d.rectangle([206 * s, 300 * s, 306 * s, 312 * s], fill=(40, 40, 40))  # a line of "text"
    return _finish(img, mask, size, seed=2)


def draw_pillow(size: int = 512) -> Drawing:
    img, mask, d, m = _canvas(size)
    s = size * SS / 512
    _shape(
        d,
        m,
        "rounded_rectangle",
        [96 * s, 120 * s, 416 * s, 400 * s],
        fill=(120, 140, 125),
        radius=60 * s,
    )
    d.ellipse([190 * s, 200 * s, 320 * s, 310 * s], fill=(238, 238, 234))  # near-white patch
    return _finish(img, mask, size, seed=3)


def draw_ball(size: int = 512) -> Drawing:
    """An RGBA packshot: a ball on a transparent background (its alpha is the truth)."""
    big = size * SS
    s = big / 512
    img = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.ellipse([136 * s, 136 * s, 376 * s, 376 * s], fill=(230, 150, 30, 255))
    d.arc(
        [136 * s, 136 * s, 376 * s, 376 * s], 200, 340, fill=(250, 250, 250, 255), width=int(14 * s)
    )
    small = img.resize((size, size), Image.Resampling.BOX)
    truth = small.getchannel("A").point(lambda v: 255 if v >= 128 else 0)
    return small, truth


DRAWINGS: dict[str, Callable[[int], Drawing]] = {
    "mug": draw_mug,
    "bottle": draw_bottle,
    "pillow": draw_pillow,
    "ball": draw_ball,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "packshots")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, draw in DRAWINGS.items():
        image, truth = draw(args.size)
        image.save(args.out / f"{name}.png", optimize=False, compress_level=9)
        truth.save(args.out / f"{name}_mask.png", optimize=False, compress_level=9)
        print(f"{args.out / name}.png")


if __name__ == "__main__":
    main()
