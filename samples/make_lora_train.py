"""Draw ``samples/lora_train/``: 16 images of one motif (an ACME mug) in the brand colours.

Each image is 320 x 320 (above the 256 px minimum), the mug placed, sized and coloured
from a fixed seed, with a sidecar caption that starts with the trigger word ``acmestyle``.
It is a drawn toy set for exercising training, not product photography.

    .venv/bin/python samples/make_lora_train.py
    shotline lora train --brand samples/brands/acme.yaml --images samples/lora_train \\
        --name acme_mug --trigger acmestyle --steps 50 --resolution 64
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parent / "lora_train"
# ACME Home's palette: teal, coral, sand, slate.
COLOURS = {
    "teal": (0, 128, 128),
    "coral": (255, 111, 97),
    "sand": (222, 196, 150),
    "slate": (70, 80, 95),
}
BACKGROUNDS = {"white": (250, 250, 250), "sand": (240, 228, 205)}
SIZE = 320


def draw_mug(
    rng: random.Random, colour: tuple[int, int, int], bg: tuple[int, int, int]
) -> Image.Image:
    img = Image.new("RGB", (SIZE, SIZE), bg)
    d = ImageDraw.Draw(img)
    w = rng.randint(110, 150)
    h = int(w * rng.uniform(1.0, 1.25))
    x = rng.randint(40, SIZE - w - 70)
    y = rng.randint(40, SIZE - h - 30)
    d.ellipse((x + w - 20, y + h // 4, x + w + 45, y + 3 * h // 4), outline=colour, width=14)
    d.rectangle((x, y, x + w, y + h), fill=colour)
    d.ellipse((x, y - 12, x + w, y + 12), fill=tuple(min(255, c + 40) for c in colour))
    d.ellipse((x - 10, y + h - 6, x + w + 10, y + h + 14), fill=tuple(max(0, c - 60) for c in bg))
    return img


def make(out: Path = OUT, count: int = 16, seed: int = 16) -> list[Path]:
    """Write ``count`` images with sidecar captions into ``out``; return the image paths."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    names = sorted(COLOURS)
    for i in range(count):
        cname = names[i % len(names)]
        bname = sorted(BACKGROUNDS)[(i // len(names)) % len(BACKGROUNDS)]
        img = draw_mug(rng, COLOURS[cname], BACKGROUNDS[bname])
        path = out / f"mug_{i:02d}.png"
        img.save(path, format="PNG")
        path.with_suffix(".txt").write_text(
            f"acmestyle, a {cname} ceramic mug on a {bname} background\n"
        )
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in make():
        print(p)
