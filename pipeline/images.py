"""Decoding untrusted images with bounded memory, and errors that name the image.

A PNG of a few hundred KB can declare 8000 x 8000 pixels and decode to gigabytes. The
pixel count is read from the header and checked against ``max_pixels`` *before* any pixel
is decoded (callers pass the cap; there is no global setting, and Pillow's process-wide
``Image.MAX_IMAGE_PIXELS`` is left alone). Pillow's own bomb errors and warnings count as
refusals too. Errors are ``ImageError`` (a ``ValueError``) and start with ``what`` (usually
the file; callers that add the name themselves pass none), never with
``<_io.BytesIO object at 0x...>``.

Only the formats a catalog or our own line uses are opened (``ALLOWED_FORMATS``: JPEG, PNG,
WebP, GIF's first frame, TIFF, AVIF): Pillow's rarer plugins (DDS, SPIDER, PSD, ...) are
where hostile files find unguarded code. And *every* exception a decoder raises, whatever
its class (``struct.error`` from a type-confused EXIF tag, ``NotImplementedError`` from a
DDS, ``RuntimeError`` from an AVIF's colour conversion), becomes the one-line ``ImageError``
for that image alone: one hostile image never stops a batch.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image, UnidentifiedImageError

from pipeline.files import read_capped

# Pillow format names; the ones this Pillow can't read (AVIF without its plugin) drop out.
ALLOWED_FORMATS = tuple(
    f
    for f in ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "AVIF")
    if f in Image.registered_extensions().values()
)
# 4096 x 4096: above any product shot we generate or review; decoding one costs ~50 MB.
DEFAULT_MAX_PIXELS = 4096 * 4096
DEFAULT_MAX_IMAGE_BYTES = 64 << 20
_OBJECT_REPR = re.compile(r"<_io\.\w+ object at 0x[0-9a-f]+>")


class ImageError(ValueError):
    """Not a readable image, or one too large to decode."""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not a recognised image format"  # nor one of ALLOWED_FORMATS
    # Pillow names the stream it read from; the caller names the file instead.
    return _OBJECT_REPR.sub("the data", str(exc)) or type(exc).__name__


def _named(what: str | None) -> str:
    return f"{what}: " if what else ""


@contextmanager
def opened_image(
    data: bytes, what: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Iterator[Image.Image]:
    """``Image.open`` on ``data`` (an allowed format) with its size checked; pixels are not
    decoded yet. Any exception raised inside the ``with`` block (where the caller decodes)
    becomes an ``ImageError`` naming ``what``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Exception as exc:
        raise image_error(exc, what) from None
    with im:
        width, height = im.size
        if width * height > max_pixels:
            raise ImageError(
                f"{_named(what)}image is {width}x{height} pixels; the limit is "
                f"{max_pixels / 1e6:.1f} megapixels"
            )
        try:
            yield im
        except Exception as exc:
            raise image_error(exc, what) from None


def image_error(exc: BaseException, what: str | None = None) -> ImageError:
    """The one-line ``ImageError`` for whatever a decoder raised (an ``ImageError`` as is)."""
    if isinstance(exc, ImageError):
        return exc
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return ImageError(f"{_named(what)}image too large: {_reason(exc)}")
    reason = " ".join(_reason(exc).split())[:300]  # one line, bounded
    if not isinstance(exc, (UnidentifiedImageError, OSError, ValueError, SyntaxError)):
        reason = f"{type(exc).__name__}: {reason}"  # an unexpected class: say which
    return ImageError(f"{_named(what)}not a readable image: {reason}")


def decode_image(
    data: bytes, what: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS, mode: str = "RGB"
) -> Image.Image:
    """The decoded image in ``mode`` (bounded by ``max_pixels``); ``ImageError`` otherwise."""
    with opened_image(data, what, max_pixels) as im, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        im.load()  # a GIF's (or TIFF's) first frame
        return im.convert(mode)


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation of an encoded image (1 when it has none, or none readable)."""
    try:
        with opened_image(data, None, max_pixels=2**62) as im:  # header only: no pixels
            return int(im.getexif().get(0x0112, 1))
    except ImageError:
        return 1


def load_image_file(
    path: str | os.PathLike[str],
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    mode: str = "RGB",
) -> Image.Image:
    """An image file, read with ``read_capped`` and decoded with ``decode_image``.

    Raises ``InputFileError`` (missing, not a regular file, too large) or ``ImageError``;
    both are ``ValueError`` and name the file.
    """
    return decode_image(read_capped(path, max_bytes, "image"), str(path), max_pixels, mode)
