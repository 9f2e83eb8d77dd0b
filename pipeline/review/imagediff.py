"""Pixel difference between two encoded images (``shotline reproduce`` on a mismatch)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pipeline.images import decode_image


def _pixels(data: bytes, what: str) -> np.ndarray:
    return np.asarray(decode_image(data, what), dtype=np.int16)


def pixel_difference(recorded: bytes, reproduced: bytes) -> dict[str, Any]:
    """How far apart two images are, channel values 0-255.

    ``max_abs``/``mean_abs`` are per channel value, ``changed_fraction`` the share of pixels
    with any channel differing, ``psnr_db`` is None when identical. Different sizes give
    only the sizes (nothing to compare pixel by pixel).
    """
    a, b = _pixels(recorded, "recorded image"), _pixels(reproduced, "reproduced image")
    if a.shape != b.shape:
        return {
            "same_size": False,
            "recorded_size": [a.shape[1], a.shape[0]],
            "reproduced_size": [b.shape[1], b.shape[0]],
        }
    diff = np.abs(a - b)
    mse = float(np.mean(diff.astype(np.float64) ** 2))
    return {
        "same_size": True,
        "size": [a.shape[1], a.shape[0]],
        "max_abs": int(diff.max(initial=0)),
        "mean_abs": float(diff.mean()) if diff.size else 0.0,
        "changed_fraction": float(np.any(diff > 0, axis=-1).mean()) if diff.size else 0.0,
        "psnr_db": None if mse == 0 else 10 * math.log10(255.0**2 / mse),
    }
