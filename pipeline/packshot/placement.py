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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import cv2
import numpy as np

from pipeline.packshot.cutout import Cutout

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

    def lineage(self) -> dict[str, Any]:
        return {**self.spec.to_json(), "box": list(self.box), "size": list(self.rgb.shape[1::-1])}


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def place(cutout: Cutout, spec: PlacementSpec, width: int, height: int) -> Placed:
    """Scale the cutout's product to ``spec.scale`` of the canvas and put it at the anchor."""
    alpha_src = cutout.alpha
    x0, y0, x1, y1 = _bbox(alpha_src > 0)
    bw, bh = x1 - x0, y1 - y0
    free_w = width * (1 - 2 * spec.margin)
    free_h = height * (1 - 2 * spec.margin)
    target = spec.scale * max(width, height)
    factor = min(target / max(bw, bh), free_w / bw, free_h / bh)
    nw, nh = max(1, round(bw * factor)), max(1, round(bh * factor))
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
    prod = cv2.resize(cutout.rgb[y0:y1, x0:x1], (nw, nh), interpolation=interp)
    # Linear for the alpha: cubic overshoots and would ring outside the product.
    a = cv2.resize(alpha_src[y0:y1, x0:x1], (nw, nh), interpolation=cv2.INTER_LINEAR)
    px = (width - nw) // 2
    if spec.anchor == "bottom":
        py = height - nh - round(height * max(spec.floor_margin, spec.margin))
    else:
        py = (height - nh) // 2
    py = max(0, min(py, height - nh))

    alpha = np.zeros((height, width), np.uint8)
    alpha[py : py + nh, px : px + nw] = a
    shadow = _shadow(alpha, spec)
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = spec.fill
    canvas = apply_shadow(canvas, shadow)
    rgb = canvas.copy()
    region = rgb[py : py + nh, px : px + nw]
    rgb[py : py + nh, px : px + nw] = blend(prod, region, a)
    core = alpha == 255
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * spec.seam_px + 1,) * 2)
    keep = cv2.erode(core.astype(np.uint8), k) if spec.seam_px > 0 else core.astype(np.uint8)
    inpaint_mask = np.where(keep > 0, 0, 255).astype(np.uint8)
    return Placed(rgb, alpha, core, inpaint_mask, shadow, (px, py, px + nw, py + nh), spec)


def blend(top: np.ndarray, bottom: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``top`` over ``bottom`` with uint8 ``alpha``, rounded; alpha 255 gives ``top`` exactly."""
    a = alpha.astype(np.uint16)[..., None]
    out = top.astype(np.uint16) * a + bottom.astype(np.uint16) * (255 - a) + 127
    return (out // 255).astype(np.uint8)


def apply_shadow(image: np.ndarray, shadow: np.ndarray) -> np.ndarray:
    """Darken ``image`` by the shadow opacity (multiplicative, so it works on any scene)."""
    if not shadow.any():
        return image
    s = shadow.astype(np.uint16)[..., None]
    return ((image.astype(np.uint16) * (255 - s) + 127) // 255).astype(np.uint8)


def _shadow(alpha: np.ndarray, spec: PlacementSpec) -> np.ndarray:
    """A soft shadow drawn from the placed mask: an ellipse at the base, or an offset copy."""
    h, w = alpha.shape
    out: np.ndarray = np.zeros((h, w), np.float32)
    if spec.shadow == "none" or not alpha.any():
        return out.astype(np.uint8)
    x0, y0, x1, y1 = _bbox(alpha > 0)
    bw, bh = x1 - x0, y1 - y0
    if spec.shadow == "contact":
        center = ((x0 + x1) // 2, y1 - max(1, bh // 60))
        axes = (max(1, int(bw * 0.48)), max(1, int(bh * 0.05)))
        cv2.ellipse(out, center, axes, 0, 0, 360, 1.0, -1)
        sigma = max(1.0, bh * 0.02)
    else:  # drop: the silhouette, moved down-right and blurred
        dx, dy = max(1, int(bw * 0.04)), max(1, int(bh * 0.04))
        m = np.array([[1, 0, dx], [0, 1, dy]], dtype=np.float32)
        out = cv2.warpAffine(alpha.astype(np.float32) / 255.0, m, (w, h))
        sigma = max(1.0, bh * 0.03)
    out = cv2.GaussianBlur(out, (0, 0), sigma)
    return np.clip(out * spec.shadow_opacity * 255.0, 0, 255).astype(np.uint8)
