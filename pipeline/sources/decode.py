"""Source image bytes -> sRGB RGB or RGBA pixels, bounded and upright.

Decoding goes through ``pipeline.images.opened_image`` (allowed formats only; pixel count
checked from the header before any pixel is decoded; Pillow's decompression-bomb warnings
are errors; any exception the steps below raise is the image's one-line ``ImageError``).
Then:

- ``ImageOps.exif_transpose``: phones and some DAMs store the pixels sideways and an EXIF
  orientation tag; the packshot must be upright before it is cut out;
- 16-bit and 32-bit grey (``I;16``, ``I``) scaled to 8 bits (Pillow's own convert clips);
- an embedded ICC profile (CMYK, Adobe RGB, Display P3, grey) converted to sRGB with
  ImageCms; without one CMYK, palette, grey and YCbCr are converted by Pillow;
- an alpha channel (RGBA, LA, PA, palette or grey with a transparent colour) is kept:
  a transparent packshot brings its own cutout.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageCms, ImageOps

from pipeline.images import DEFAULT_MAX_PIXELS, opened_image

_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


@dataclass
class DecodedSource:
    image: Image.Image  # "RGB" or "RGBA", sRGB
    source_mode: str  # the mode as stored ("CMYK", "P", "I;16", ...)
    source_format: str | None = None  # Pillow's format name: "PNG", "JPEG", ...
    steps: list[str] = field(default_factory=list)  # conversions applied, for lineage

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height

    @property
    def has_alpha(self) -> bool:
        return self.image.mode == "RGBA"


def _to_8bit(im: Image.Image) -> Image.Image:
    if im.mode.startswith("I;16") or im.mode == "I":
        arr = np.asarray(im).astype(np.int64)
        return Image.fromarray((np.clip(arr, 0, 65535) >> 8).astype(np.uint8), "L")
    if im.mode == "F":
        return Image.fromarray(np.clip(np.asarray(im), 0, 255).astype(np.uint8), "L")
    return im


def _to_srgb(color: Image.Image, icc: bytes | None, steps: list[str]) -> Image.Image:
    if color.mode not in ("RGB", "CMYK", "L"):
        steps.append(f"{color.mode}->RGB")
        color = color.convert("RGB")
    if icc:
        try:
            profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            out = ImageCms.profileToProfile(color, profile, _SRGB, outputMode="RGB")
            if out is not None:
                steps.append(f"icc({color.mode})->sRGB")
                return out
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            steps.append("icc unreadable or mismatched: ignored")
    if color.mode != "RGB":
        steps.append(f"{color.mode}->RGB")
        color = color.convert("RGB")
    return color


def decode_source(
    data: bytes, what: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> DecodedSource:
    """The upright sRGB image in ``data``; ``ImageError`` (naming ``what``) otherwise."""
    # opened_image turns whatever the decoding below raises (a type-confused EXIF tag in
    # exif_transpose, a colour conversion that fails) into the ImageError for this image.
    with opened_image(data, what, max_pixels) as im, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        source_mode = im.mode
        im.load()
        icc = im.info.get("icc_profile")
        steps: list[str] = []
        orientation = im.getexif().get(0x0112, 1)
        img = ImageOps.exif_transpose(im) or im
        if orientation not in (1, None):
            steps.append(f"exif_transpose({orientation})")
        img = _to_8bit(img)
        alpha = None
        if img.mode in _ALPHA_MODES or "transparency" in img.info:
            rgba = img.convert("RGBA")
            alpha = rgba.getchannel("A")
            img = rgba.convert("RGB")
        color = _to_srgb(img, icc if isinstance(icc, bytes) else None, steps)
        if alpha is not None:
            color.putalpha(alpha)
            steps.append("alpha kept")
        return DecodedSource(color, source_mode, im.format, steps)
