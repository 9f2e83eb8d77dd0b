"""The reviewer's view of a packshot shot's input: the catalog image with its cutout outlined.

A reviewer approving a packshot shot checks two things the generated image alone cannot
show: that the product is the catalog's own, and that the cutout followed its edge. So the
sheet shows the source image beside the shot, the mask's outline drawn over it in red.
"""

from __future__ import annotations

from PIL import Image, ImageFilter

from pipeline.images import ImageError, decode_image

OUTLINE = (230, 0, 60)


def outlined_source(
    source: bytes | None, mask: bytes | None, size: int, max_pixels: int = 6000 * 6000
) -> Image.Image | None:
    """An RGB thumbnail (at most ``size`` px) of ``source`` with ``mask``'s outline, or None
    if the source is missing or unreadable (a missing or odd-sized mask just draws none)."""
    if not source:
        return None
    try:
        img = decode_image(source, max_pixels=max_pixels, mode="RGBA")
    except ImageError:
        return None
    flat = Image.new("RGB", img.size, (236, 236, 236))  # transparent packshots on light grey
    flat.paste(img, mask=img.getchannel("A"))
    flat.thumbnail((size, size), Image.Resampling.LANCZOS)
    if mask:
        try:
            m = decode_image(mask, max_pixels=max_pixels, mode="L")
        except ImageError:
            return flat
        if m.size != img.size:
            return flat
        m = m.resize(flat.size, Image.Resampling.BILINEAR).point(lambda v: 255 if v >= 128 else 0)
        edge = m.filter(ImageFilter.FIND_EDGES).filter(ImageFilter.MaxFilter(3))
        flat.paste(OUTLINE, mask=edge)
    return flat
