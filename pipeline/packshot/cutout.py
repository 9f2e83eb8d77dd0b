"""Cutout: a packshot in, an alpha mask with its method, parameters and confidence out.

Three methods, chosen in this order:

- ``alpha``: the image has a real alpha channel (not all opaque); it is used as is.
- ``onnx``: a learned matte from a local ONNX model (``pipeline.packshot.onnx_matte``), when
  the caller passes one. It is the only method that accepts a non-uniform background.
- ``flood_grabcut``: the studio-packshot default. The background colour is the median of the
  border; pixels within ``tolerance`` of it that are *connected to the border* are background
  (a flood fill from the border, so a white label inside the product stays foreground); OpenCV's
  ``grabCut`` then refines a thin band around that boundary (anti-aliased edges, soft shadows);
  the edge is feathered by ``feather_px``.

A packshot whose border is not a uniform colour (a lifestyle photo) is refused with the reason
(``CutoutError``) unless a learned matte is given: guessing there would cut the wrong thing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np
from PIL import Image

# A learned matte: RGB uint8 (H, W, 3) in, float alpha in [0, 1] (H, W) out.
MatteModel = Callable[[np.ndarray], np.ndarray]


class CutoutError(ValueError):
    """A packshot that cannot be cut out reliably; the message says why."""


@dataclass(frozen=True)
class CutoutParams:
    """How the default method runs. Recorded on every cutout (lineage, reproduce)."""

    border_px: int = 4  # the border strip the background colour is estimated from
    tolerance: int = 12  # max per-channel difference from the background colour (levels)
    # Share of border pixels that must be within tolerance for the background to be "uniform".
    min_border_match: float = 0.97
    grabcut_iters: int = 1
    band_px: int = 3  # half-width of the band grabCut may move the boundary within
    # grabCut runs on the product's box scaled down to at most this many pixels a side: its
    # cost grows with the pixels it sees, and the band decision is upsampled back.
    grabcut_size: int = 192
    feather_px: int = 2  # the alpha ramps over about this many pixels each side of the edge
    min_area: float = 0.005  # the product must cover at least this share of the image...
    max_area: float = 0.95  # ...and at most this share

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Cutout:
    """An RGB packshot with its feathered alpha (uint8, 255 = product) and how it was made."""

    rgb: np.ndarray  # (H, W, 3) uint8
    alpha: np.ndarray  # (H, W) uint8, feathered
    method: str  # alpha | flood_grabcut | onnx
    params: dict[str, Any]
    confidence: dict[str, float]
    background: tuple[int, int, int] | None = None  # estimated colour (flood_grabcut only)
    mask_sha256: str = field(default="")

    @property
    def mask(self) -> np.ndarray:
        """The hard mask: alpha at least half."""
        return self.alpha >= 128

    def lineage(self) -> dict[str, Any]:
        """What a shot records about its cutout (JSON)."""
        return {
            "method": self.method,
            "params": self.params,
            "mask_sha256": self.mask_sha256,
            "confidence": self.confidence,
            "background": list(self.background) if self.background else None,
            "size": [int(self.alpha.shape[1]), int(self.alpha.shape[0])],
        }


def mask_sha256(alpha: np.ndarray) -> str:
    """sha256 over the alpha's shape and bytes (so equal masks of other sizes differ)."""
    h = hashlib.sha256(f"{alpha.shape[1]}x{alpha.shape[0]}\0".encode())
    h.update(np.ascontiguousarray(alpha, dtype=np.uint8).tobytes())
    return h.hexdigest()


def cut_out(
    image: Image.Image,
    params: CutoutParams | None = None,
    matte: MatteModel | None = None,
    what: str = "packshot",
    fallback: MatteModel | None = None,
    matte_info: Mapping[str, str] | None = None,
) -> Cutout:
    """Cut the product out of ``image``; ``CutoutError`` (naming ``what``) when it can't.
    ``matte`` cuts every opaque image; ``fallback`` only those whose background is not
    uniform (the default method's refusal). ``matte_info`` is what the cutout records about
    whichever of them ran (model file, sha256)."""
    params = params or CutoutParams()
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    if min(rgb.shape[:2]) < 4 * params.border_px:
        raise CutoutError(f"{what}: image is {rgb.shape[1]}x{rgb.shape[0]}, too small to cut out")
    own = _own_alpha(image)
    if own is not None:
        return _finish(rgb, own, "alpha", {}, {"border_match": 1.0}, None, params, what)
    bg, match = _border_background(rgb, params)
    learned = matte
    if learned is None and match < params.min_border_match:
        learned = fallback
    if learned is not None:
        pred = np.asarray(learned(rgb), dtype=np.float32)
        if pred.min() < 0.0:  # convertScaleAbs would fold negatives back up
            pred = np.maximum(pred, 0.0)
        # rint(pred * 255) saturated to uint8, in one OpenCV pass: the same bytes as numpy's
        # rint/clip/astype, 17x faster on a 3000² source.
        alpha = cv2.convertScaleAbs(pred, alpha=255.0)
        info = dict(matte_info or {})
        return _finish(rgb, alpha, "onnx", info, {"border_match": match}, None, params, what)
    if match < params.min_border_match:
        raise CutoutError(
            f"{what}: background is not uniform ({match:.0%} of the border is within "
            f"{params.tolerance:g} of its median colour, need {params.min_border_match:.0%}); "
            "a lifestyle photo needs a learned matte (`shotline matte install` for U²-Net-p, "
            "or SHOTLINE_MATTE_MODEL)"
        )
    hard = _flood_foreground(rgb, bg, params)
    if hard.any() and params.grabcut_iters > 0:
        hard = _grabcut_refine(rgb, hard, params)
    alpha = feather(hard, params.feather_px)
    return _finish(
        rgb, alpha, "flood_grabcut", params.to_json(), {"border_match": match}, bg, params, what
    )


def _own_alpha(image: Image.Image) -> np.ndarray | None:
    """The image's alpha when it has a real one (some pixel not opaque), else None."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        alpha = np.asarray(image.convert("RGBA"), dtype=np.uint8)[..., 3]
        if alpha.min() < 255:
            return np.ascontiguousarray(alpha)
    return None


def _border_background(rgb: np.ndarray, params: CutoutParams) -> tuple[tuple[int, int, int], float]:
    """The border's median colour and the share of border pixels within tolerance of it."""
    b = params.border_px
    strips = [rgb[:b].reshape(-1, 3), rgb[-b:].reshape(-1, 3)]
    strips += [rgb[b:-b, :b].reshape(-1, 3), rgb[b:-b, -b:].reshape(-1, 3)]
    border = np.concatenate(strips)
    median = np.median(border, axis=0)
    dist = np.abs(border.astype(np.int16) - median.astype(np.int16)).max(axis=1)
    match = float((dist <= params.tolerance).mean())
    return (int(median[0]), int(median[1]), int(median[2])), match


def _distance(rgb: np.ndarray, bg: tuple[int, int, int]) -> np.ndarray:
    """Per-pixel distance to the background colour: the largest channel difference (uint8).

    L-infinity rather than Euclidean: three OpenCV passes instead of float arithmetic on every
    pixel, and a tolerance that reads as "levels per channel".
    """
    ref = np.empty_like(rgb)
    ref[...] = np.asarray(bg, dtype=np.uint8)
    diff = cv2.absdiff(rgb, ref)
    r, g, b = cv2.split(diff)
    return cv2.max(cv2.max(r, g), b)


def _flood_foreground(
    rgb: np.ndarray, bg: tuple[int, int, int], params: CutoutParams
) -> np.ndarray:
    """Foreground = not (near the background colour and connected to the border)."""
    near = (_distance(rgb, bg) <= params.tolerance).astype(np.uint8)
    # A flood fill from the border over near-background pixels, done as connected components
    # (one pass, all seeds at once): the components that touch the border are background.
    n, labels = cv2.connectedComponents(near, connectivity=4)
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    is_bg = np.zeros(n, dtype=bool)
    is_bg[edge[edge > 0]] = True
    out: np.ndarray = ~is_bg[labels]
    return out


def _grabcut_refine(rgb: np.ndarray, hard: np.ndarray, params: CutoutParams) -> np.ndarray:
    """Let grabCut move the boundary within ``band_px`` of the flood-fill edge.

    grabCut sees only the product's bounding box (plus a margin), scaled so its longer side is
    at most ``grabcut_size``: far background tells it nothing about the edge, and its cost is
    per pixel. Its answer is used inside the band only (upsampled there); elsewhere the
    flood fill stands.
    """
    h, w = hard.shape
    bx, by, bw, bh = cv2.boundingRect(hard.astype(np.uint8))
    m = 4 * params.band_px + 8
    y0, y1 = max(0, by - m), min(h, by + bh + m)
    x0, x1 = max(0, bx - m), min(w, bx + bw + m)
    crop = hard[y0:y1, x0:x1].astype(np.uint8)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * params.band_px + 1,) * 2)
    band = cv2.dilate(crop, k) > cv2.erode(crop, k)
    ch, cw = crop.shape
    f = min(1.0, params.grabcut_size / max(ch, cw))
    sw, sh = max(8, round(cw * f)), max(8, round(ch * f))
    small = cv2.resize(crop, (sw, sh), interpolation=cv2.INTER_NEAREST)
    sband = cv2.resize(band.astype(np.uint8), (sw, sh), interpolation=cv2.INTER_NEAREST) > 0
    gc: np.ndarray = np.where(small > 0, cv2.GC_FGD, cv2.GC_BGD).astype(np.uint8)
    gc[sband & (small > 0)] = cv2.GC_PR_FGD
    gc[sband & (small == 0)] = cv2.GC_PR_BGD
    if not (gc == cv2.GC_BGD).any() or not (gc == cv2.GC_FGD).any():
        return hard  # no sure pixels on one side: grabCut has nothing to learn from
    img = np.ascontiguousarray(rgb[y0:y1, x0:x1, ::-1])  # OpenCV wants BGR
    if f < 1.0:
        img = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_AREA)
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    # grabCut seeds its GMMs with k-means from OpenCV's (per-thread) RNG: seed it, or the same
    # packshot gives a different mask from run to run and a shot could not be reproduced.
    cv2.setRNGSeed(0)
    cv2.grabCut(img, gc, (0, 0, 0, 0), bgd, fgd, params.grabcut_iters, cv2.GC_INIT_WITH_MASK)
    fg = ((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)).astype(np.float32)
    if f < 1.0:
        fg = cv2.resize(fg, (cw, ch), interpolation=cv2.INTER_LINEAR)
    refined = np.where(band, fg >= 0.5, crop > 0)
    out = hard.copy()
    out[y0:y1, x0:x1] = refined
    return out


def feather(hard: np.ndarray, feather_px: int) -> np.ndarray:
    """A hard mask's alpha with the edge ramped over ``feather_px``: 255 deep inside, 0 far out.

    A Gaussian blur keeps the 50 % line on the hard edge, so the hard mask of the result is
    the input mask again (up to corners).
    """
    mask = hard.astype(np.uint8) * 255
    if feather_px <= 0:
        return mask
    sigma = feather_px / 2.0
    ksize = 2 * int(np.ceil(3 * sigma)) + 1
    return cv2.GaussianBlur(mask, (ksize, ksize), sigma, borderType=cv2.BORDER_REPLICATE)


def _finish(
    rgb: np.ndarray,
    alpha: np.ndarray,
    method: str,
    method_params: dict[str, Any],
    confidence: dict[str, float],
    bg: tuple[int, int, int] | None,
    params: CutoutParams,
    what: str,
) -> Cutout:
    hard = (alpha >= 128).astype(np.uint8)
    area = float(hard.mean())
    n_components = cv2.connectedComponents(hard, connectivity=8)[0] - 1
    if area < params.min_area:
        raise CutoutError(f"{what}: no product found ({area:.1%} of the image is foreground)")
    if area > params.max_area:
        raise CutoutError(
            f"{what}: foreground covers {area:.1%} of the image; the background was not found"
        )
    conf = {**confidence, "area_fraction": area, "components": float(n_components)}
    # One number to sort by: a uniform border and a single component are what a packshot has.
    conf["score"] = float(conf["border_match"] / max(1, n_components))
    return Cutout(
        rgb=rgb,
        alpha=np.ascontiguousarray(alpha),
        method=method,
        params=method_params,
        confidence=conf,
        background=bg,
        mask_sha256=mask_sha256(alpha),
    )
