"""The packshot stage as pure functions over arrays: prepare -> (inpaint) -> composite ->
fidelity. The line calls these; the inpainting itself is ``pipeline.generate.inpaint``.

- ``prepare``: the product cut out of its source image and placed on the shot's canvas; with
  an output size apart from the model's (``placed_for_output``), placed at the output size
  from the source and downscaled for the model.
- ``composite_checked``: the real product pixels back over a generated scene, and the check
  that, inside the eroded mask, they equal the placed source bit for bit. The one place that
  composites (the inpainter and the stand-in generators' path both call it).
- ``fidelity_scores``: the gate's product-fidelity scores of one shot, from the raw image,
  the final (watermarked) file and the placement; they join the gate's decision through
  ``pipeline.gate.policy.with_checks``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from pipeline.images import ImageError, decode_image
from pipeline.packshot.composite import composite
from pipeline.packshot.cutout import Cutout, CutoutError, MatteModel, cut_out
from pipeline.packshot.fidelity import (
    MIN_PSNR_DB,
    Fidelity,
    ImageEncoder,
    check_exact,
    check_psnr,
    clip_similarity,
)
from pipeline.packshot.onnx_matte import OnnxMatte
from pipeline.packshot.placement import Placed, PlacementSpec, downscaled, place
from pipeline.types import Score

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Prepared:
    """One packshot shot ready for the GPU: its product cut out and placed on the canvas."""

    cutout: Cutout
    placed: Placed


def cut(
    image: Image.Image,
    matte: OnnxMatte | MatteModel | None,
    what: str,
    fallback: OnnxMatte | None = None,
) -> Cutout | str:
    """The product cut out of a source image, or the one-line reason it cannot be.
    ``matte`` cuts every opaque image, ``fallback`` those with a non-uniform background."""
    used = matte if matte is not None else fallback
    info = used.info if isinstance(used, OnnxMatte) else None
    try:
        return cut_out(image, matte=matte, what=what, fallback=fallback, matte_info=info)
    except (CutoutError, ValueError) as exc:
        return f"cutout: {exc}"


def placed_on_canvas(
    cutout: Cutout, spec: PlacementSpec, width: int, height: int, what: str
) -> Placed | str:
    """The cutout placed on a ``width`` x ``height`` canvas, or why it cannot be."""
    try:
        return place(cutout, spec, width, height)
    except (ValueError, cv2.error) as exc:
        return f"placement of {what}: {exc}"


def placed_for_output(
    cutout: Cutout,
    spec: PlacementSpec,
    model_size: tuple[int, int],
    output_size: tuple[int, int],
    what: str,
) -> tuple[Placed, Placed] | str:
    """``(canvas, placed)``: the product placed at the output size straight from its source
    (resampled once, or copied at 1:1), and the model's canvas, a downscaled copy of it (the
    same placement when the sizes are equal). Or why it cannot be placed."""
    placed = placed_on_canvas(cutout, spec, *output_size, what)
    if isinstance(placed, str) or output_size == model_size:
        return placed if isinstance(placed, str) else (placed, placed)
    try:
        return downscaled(placed, *model_size), placed
    except (ValueError, cv2.error) as exc:
        return f"placement of {what}: {exc}"


def composite_checked(scene: Image.Image, placed: Placed) -> tuple[Image.Image, Fidelity]:
    """``scene`` (resized to the canvas if a stand-in made it another size) with the product
    pasted back, and the exact-pixel check of the result."""
    size = placed.rgb.shape[1::-1]
    if scene.size != size:
        scene = scene.convert("RGB").resize(size, Image.Resampling.NEAREST)
    final = composite(scene, placed)
    return final, check_exact(final, placed.rgb, placed.core)


def _score(name: str, value: float, threshold: float | None, triggered: bool) -> Score:
    return Score(name=name, kind="fidelity", score=value, threshold=threshold, triggered=triggered)


def fidelity_scores(
    raw: Image.Image,
    final: bytes,
    canvas: np.ndarray,
    alpha: np.ndarray,
    encoder: ImageEncoder | None = None,
) -> tuple[list[Score], list[str]]:
    """The product-fidelity scores of one packshot shot and the reasons it fails: inside the
    eroded product mask the raw image equals the placed source bit for bit, and so does the
    final file where its format is lossless (the watermark lives in the generated scene:
    ``KeepPixels``); a lossy final (JPEG, WebP) must be within ``MIN_PSNR_DB`` of it. With the
    gate's CLIP ``encoder``, how alike CLIP finds product and packshot is recorded too (not a
    cut)."""
    core = alpha == 255
    try:
        exact = check_exact(raw, canvas, core)
        decoded = decode_image(final, mode="RGB")
        close = check_psnr(decoded, canvas, core)
        lossless = final.startswith(PNG_SIGNATURE)
        kept = check_exact(decoded, canvas, core) if lossless else None
    except (ValueError, ImageError) as exc:
        return [], [f"product fidelity: {exc}"]
    psnr_db = close.psnr_db if close.psnr_db is not None and math.isfinite(close.psnr_db) else 99.0
    scores = [
        _score("product_pixels_changed", float(exact.mismatched), 0.0, not exact.ok),
        _score("product_psnr_db", float(psnr_db), MIN_PSNR_DB, not close.ok),
    ]
    reasons = [r for r in (exact.reason, close.reason) if r]
    if kept is not None:
        name = "product_pixels_changed_final"
        scores.append(_score(name, float(kept.mismatched), 0.0, not kept.ok))
        if kept.reason:
            reasons.append(f"{kept.reason} in the final file")
    if encoder is not None:
        similarity = clip_similarity(encoder, raw, canvas, core)
        if similarity is not None:
            scores.append(_score("product_clip_similarity", similarity, None, False))
    return scores, reasons
