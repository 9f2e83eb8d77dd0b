"""Pixel difference used by ``shotline reproduce`` on a mismatch."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from pipeline.review.imagediff import pixel_difference
from tests.factories import noise_png


def test_pixel_difference() -> None:
    a = noise_png(1)
    assert pixel_difference(a, a) == {
        "same_size": True,
        "size": [64, 64],
        "max_abs": 0,
        "mean_abs": 0.0,
        "changed_fraction": 0.0,
        "psnr_db": None,
    }
    arr = np.asarray(Image.open(io.BytesIO(a))).copy()
    arr[0, 0, 0] ^= 4
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    d = pixel_difference(a, buf.getvalue())
    assert d["max_abs"] == 4 and d["changed_fraction"] == 1 / 4096 and d["psnr_db"] > 60
    other = pixel_difference(a, noise_png(1, size=32))
    assert other == {"same_size": False, "recorded_size": [64, 64], "reproduced_size": [32, 32]}
