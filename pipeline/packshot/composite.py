"""Composite back: the real product pixels over the generated scene, in pixel space.

The VAE round trip changes every pixel, masked or not (diffusers issue #4782), so the product in
a decoded image is never exactly the source's. This step is what keeps it: the generated image
gets the placement's shadow, then the placed source goes back over it with the feathered alpha.
Where the alpha is 255 (``Placed.core``) the output equals ``Placed.rgb`` exactly.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from pipeline.packshot.placement import Placed, apply_shadow, blend


def composite(generated: Image.Image, placed: Placed) -> Image.Image:
    """The final RGB image: ``generated`` (the canvas size) with the product pasted back."""
    gen = np.asarray(generated.convert("RGB"), dtype=np.uint8)
    if gen.shape != placed.rgb.shape:
        raise ValueError(
            f"generated image is {gen.shape[1]}x{gen.shape[0]}, the placement "
            f"{placed.rgb.shape[1]}x{placed.rgb.shape[0]}"
        )
    out = apply_shadow(gen, placed.shadow)
    if out is gen:
        out = gen.copy()
    # Outside the product's extent the alpha is 0: the scene stays; only that is blended.
    x0, y0, x1, y1 = placed.extent or placed.box
    region = out[y0:y1, x0:x1]
    region[:] = blend(placed.rgb[y0:y1, x0:x1], region, placed.alpha[y0:y1, x0:x1])
    return Image.fromarray(out, "RGB")
