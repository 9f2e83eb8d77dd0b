"""Placement: a cutout scaled and positioned on the canvas, plus the masks generation needs.

``place(cutout, spec, width, height)`` returns a ``Placed``:

- ``rgb``: the canvas with the product pasted over ``spec.fill`` (and the shadow drawn in): the
  image the inpainting pipeline starts from, and the "placed source" the product is kept from;
- ``alpha``: the product's feathered alpha on the canvas;
- ``core``: where ``alpha`` is 255, i.e. the eroded product mask inside which the final image
  must equal ``rgb`` bit for bit;
- ``inpaint_mask``: 255 = generate. The background plus a seam band ``seam_px`` wide inside the
  product edge, so the model blends the edge and the composite puts the product back over it;
- ``shadow``: the shadow's opacity (uint8), applied to the generated background at composite.

A shot whose output size differs from the model's (``ShotParams.hires``) is placed at the
output size; ``downscaled(placed, w, h)`` is the copy of it the model sees.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from math import ceil
from typing import Any, Literal

import cv2
import numpy as np
from PIL import Image

from pipeline.packshot.cutout import Cutout

# The one filter the product is resampled with (when its scale is not 1:1).
PRODUCT_FILTER = Image.Resampling.LANCZOS

Anchor = Literal["center", "bottom"]
Shadow = Literal["none", "contact", "drop"]


@dataclass(frozen=True)
class PlacementSpec:
    scale: float = 0.6  # the product's bounding box, as a fraction of the canvas (longer side)
    anchor: Anchor = "center"
    margin: float = 0.05  # kept free on every side, fraction of the canvas
    floor_margin: float = 0.08  # bottom anchor: gap below the product, fraction of the height
    shadow: Shadow = "none"
    shadow_opacity: float = 0.45
    seam_px: int = 3
    fill: tuple[int, int, int] = (255, 255, 255)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "fill": list(self.fill)}


@dataclass(frozen=True)
class Placed:
    rgb: np.ndarray  # (H, W, 3) uint8
    alpha: np.ndarray  # (H, W) uint8
    core: np.ndarray  # (H, W) bool
    inpaint_mask: np.ndarray  # (H, W) uint8, 255 = generate
    shadow: np.ndarray  # (H, W) uint8 opacity
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 of the product on the canvas
    spec: PlacementSpec
    # The box plus the feathered edge (what compositing blends); None: the box itself.
    extent: tuple[int, int, int, int] | None = None

    def lineage(self) -> dict[str, Any]:
        return {**self.spec.to_json(), "box": list(self.box), "size": list(self.rgb.shape[1::-1])}


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
    return x, y, x + w, y + h


def place(cutout: Cutout, spec: PlacementSpec, width: int, height: int) -> Placed:
    """Scale the cutout's product to ``spec.scale`` of the canvas and put it at the anchor.

    The product's size is its hard mask's box (not the feathered alpha's, which is a few
    pixels larger and would make a 1:1 placement resample by ~1.005). At 1:1 the pixels are
    copied, never resampled; otherwise the source is resampled once (``PRODUCT_FILTER``,
    Lanczos), the feathered edge with it. A shot with an output size apart from the model's
    is placed at the output size, straight from the source (``downscaled`` then gives the
    model its canvas)."""
    alpha_src = cutout.alpha
    hard = cutout.mask
    x0, y0, x1, y1 = _bbox(hard if hard.any() else alpha_src > 0)
    sx0, sy0, sx1, sy1 = _bbox(alpha_src > 0)  # the hard box plus its feathered edge
    bw, bh = x1 - x0, y1 - y0
    free_w = width * (1 - 2 * spec.margin)
    free_h = height * (1 - 2 * spec.margin)
    target = spec.scale * max(width, height)
    factor = min(target / max(bw, bh), free_w / bw, free_h / bh)
    nw, nh = max(1, round(bw * factor)), max(1, round(bh * factor))
    prod, a = _scaled(cutout, (sx0, sy0, sx1, sy1), factor, (nw, nh) == (bw, bh))
    px = (width - nw) // 2
    if spec.anchor == "bottom":
        py = height - nh - round(height * max(spec.floor_margin, spec.margin))
    else:
        py = (height - nh) // 2
    py = max(0, min(py, height - nh))
    scale = 1.0 if (nw, nh) == (bw, bh) else factor
    # Where the feathered region lands, clipped to the canvas.
    qx, qy = px + round((sx0 - x0) * scale), py + round((sy0 - y0) * scale)
    cx0, cy0 = max(0, qx), max(0, qy)
    cx1, cy1 = min(width, qx + a.shape[1]), min(height, qy + a.shape[0])
    prod = prod[cy0 - qy : cy1 - qy, cx0 - qx : cx1 - qx]
    a = a[cy0 - qy : cy1 - qy, cx0 - qx : cx1 - qx]

    alpha = np.zeros((height, width), np.uint8)
    alpha[cy0:cy1, cx0:cx1] = a
    box = (px, py, px + nw, py + nh)  # the product's (hard mask's) box
    # Everything the product touches, its feathered edge included: what compositing blends.
    extent = _bbox(alpha > 0) if a.any() else box
    shadow = _shadow(alpha, box, spec)
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[:] = spec.fill
    rgb = apply_shadow(rgb, shadow)
    region = rgb[cy0:cy1, cx0:cx1]
    region[:] = blend(prod, region, a)
    core = alpha == 255
    return Placed(rgb, alpha, core, _inpaint_mask(core, spec.seam_px), shadow, box, spec, extent)


def _inpaint_mask(core: np.ndarray, seam_px: int) -> np.ndarray:
    """255 = generate: everything but the core eroded by ``seam_px`` (the seam band)."""
    keep: np.ndarray = core.astype(np.uint8)
    if seam_px > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * seam_px + 1,) * 2)
        keep = cv2.erode(keep, k)
    return np.where(keep > 0, 0, 255).astype(np.uint8)


def downscaled(placed: Placed, width: int, height: int) -> Placed:
    """What the model sees of a placement made at the output size: the canvas, alpha and
    shadow resampled (area filter) to ``width`` x ``height``, the masks taken again there.
    Only the model reads it; the product is composited back from ``placed`` itself."""
    h, w = placed.alpha.shape
    size = (width, height)
    rgb = cv2.resize(placed.rgb, size, interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(placed.alpha, size, interpolation=cv2.INTER_AREA)
    shadow = cv2.resize(placed.shadow, size, interpolation=cv2.INTER_AREA)
    sx, sy = width / w, height / h

    def scaled(b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        x0, y0, x1, y1 = b
        return int(x0 * sx), int(y0 * sy), min(width, ceil(x1 * sx)), min(height, ceil(y1 * sy))

    core = alpha == 255
    mask = _inpaint_mask(core, placed.spec.seam_px)
    extent = None if placed.extent is None else scaled(placed.extent)
    return Placed(rgb, alpha, core, mask, shadow, scaled(placed.box), placed.spec, extent)


def _scaled(
    cutout: Cutout, soft: tuple[int, int, int, int], factor: float, one_to_one: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The product's region (with its feathered edge) at its placed size: a copy at 1:1."""
    sx0, sy0, sx1, sy1 = soft
    rgb, alpha = cutout.rgb[sy0:sy1, sx0:sx1], cutout.alpha[sy0:sy1, sx0:sx1]
    if one_to_one:
        return rgb.copy(), alpha.copy()
    size = (max(1, round((sx1 - sx0) * factor)), max(1, round((sy1 - sy0) * factor)))
    # Lanczos (PIL's: a = 3, its support widened when shrinking, so no aliasing), once, from
    # the source's own pixels. Linear for the alpha: Lanczos overshoots and would ring
    # outside the product.
    resized = Image.fromarray(np.ascontiguousarray(rgb), "RGB").resize(size, PRODUCT_FILTER)
    return (
        np.asarray(resized, np.uint8),
        cv2.resize(alpha, size, interpolation=cv2.INTER_LINEAR),
    )


def blend(top: np.ndarray, bottom: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``top`` over ``bottom`` with uint8 ``alpha``, rounded; alpha 255 gives ``top`` exactly."""
    out = np.array(bottom, dtype=np.uint8, order="C")  # a copy, contiguous
    top = np.ascontiguousarray(top, dtype=np.uint8)
    cv2.copyTo(top, (alpha == 255).view(np.uint8), out)
    # Only the feathered edge needs arithmetic: elsewhere alpha is 0 or 255. Its pixels are
    # few, so they are gathered by index (boolean masks over the whole region cost ~8x more
    # at 2048²); ``alpha - 1 < 254`` is ``0 < alpha < 255`` in one uint8 pass.
    flat = np.ascontiguousarray(alpha, dtype=np.uint8).reshape(-1)
    idx = np.flatnonzero((flat - np.uint8(1)) < 254)
    if idx.size:
        a = flat[idx].astype(np.uint16)[:, None]
        rows = out.reshape(-1, 3)
        mixed = top.reshape(-1, 3)[idx].astype(np.uint16) * a
        mixed += rows[idx].astype(np.uint16) * (255 - a) + 127
        rows[idx] = (mixed // 255).astype(np.uint8)
    return out


def apply_shadow(image: np.ndarray, shadow: np.ndarray) -> np.ndarray:
    """Darken ``image`` by the shadow opacity (multiplicative, so it works on any scene).

    Only the shadow's bounding box is computed; the rest of the image is copied as is.
    """
    x, y, w, h = cv2.boundingRect(shadow)
    if w == 0 or h == 0:
        return image
    out = image.copy()
    s = shadow[y : y + h, x : x + w].astype(np.uint16)[..., None]
    part = image[y : y + h, x : x + w].astype(np.uint16)
    out[y : y + h, x : x + w] = ((part * (255 - s) + 127) // 255).astype(np.uint8)
    return out


def _shadow(alpha: np.ndarray, box: tuple[int, int, int, int], spec: PlacementSpec) -> np.ndarray:
    """A soft shadow drawn from the placed mask: an ellipse at the base, or an offset copy.

    Shadows are soft, so the blur runs at a quarter of the resolution and is scaled back up,
    within the region the shadow can reach.
    """
    h, w = alpha.shape
    out = np.zeros((h, w), np.uint8)
    if spec.shadow == "none":
        return out
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    if spec.shadow == "contact":
        sigma = max(1.0, bh * 0.02)
        reach = (int(bw * 0.5 + 3 * sigma) + 2, int(bh * 0.05 + 3 * sigma) + 2)
    else:
        sigma = max(1.0, bh * 0.03)
        reach = (int(bw * 0.6 + 3 * sigma) + 2, int(bh * 0.6 + 3 * sigma) + 2)
    cx, cy = (x0 + x1) // 2, (y1 - max(1, bh // 60)) if spec.shadow == "contact" else (y0 + y1) // 2
    rx0, ry0 = max(0, cx - reach[0]), max(0, cy - reach[1])
    rx1, ry1 = min(w, cx + reach[0]), min(h, cy + reach[1])
    if rx1 <= rx0 or ry1 <= ry0:
        return out
    q = 4 if min(rx1 - rx0, ry1 - ry0) >= 32 else 1
    sw, sh = max(1, (rx1 - rx0) // q), max(1, (ry1 - ry0) // q)
    small: np.ndarray = np.zeros((sh, sw), np.float32)
    if spec.shadow == "contact":
        center = ((cx - rx0) // q, (cy - ry0) // q)
        axes = (max(1, int(bw * 0.48) // q), max(1, int(bh * 0.05) // q))
        cv2.ellipse(small, center, axes, 0, 0, 360, 1.0, -1)
    else:  # drop: the silhouette, moved down-right
        dx, dy = max(1, int(bw * 0.04)), max(1, int(bh * 0.04))
        src = np.zeros((ry1 - ry0, rx1 - rx0), np.float32)
        sx0, sy0 = max(rx0, x0 + dx), max(ry0, y0 + dy)
        sx1, sy1 = min(rx1, x1 + dx), min(ry1, y1 + dy)
        if sx1 > sx0 and sy1 > sy0:
            piece = alpha[sy0 - dy : sy1 - dy, sx0 - dx : sx1 - dx].astype(np.float32) / 255.0
            src[sy0 - ry0 : sy1 - ry0, sx0 - rx0 : sx1 - rx0] = piece
        small = cv2.resize(src, (sw, sh), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), max(0.5, sigma / q))
    big = cv2.resize(small, (rx1 - rx0, ry1 - ry0), interpolation=cv2.INTER_LINEAR)
    out[ry0:ry1, rx0:rx1] = np.clip(big * spec.shadow_opacity * 255.0, 0, 255).astype(np.uint8)
    return out
