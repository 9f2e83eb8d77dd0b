"""Renditions: the files a channel takes, made from a published master at publish time.

Each rendition is the master's pixels fitted to the channel's size and aspect (centre crop
or pad, never an upscale past the master's longest side), encoded as JPEG/WebP/PNG with an
embedded sRGB ICC profile and the master's own XMP packet (IPTC ``trainedAlgorithmicMedia``,
shot id, model and LoRA pins) in the format's container: JPEG ``APP1``, WebP ``XMP ``, PNG
``iTXt``. When the pixels changed (resized, cropped or padded) the watermark is embedded
again at the new size; either way the encoded bytes are decoded again and the watermark must
name the shot, or the rendition is refused (``RenditionError``).

The generator's output is taken as sRGB (diffusion models are trained on sRGB photos), so the
profile tags the pixels without converting them.
"""

from __future__ import annotations

import hashlib
import io
import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageCms

from pipeline.brand.config import RenditionSpec

if TYPE_CHECKING:
    # imwatermark imports torch: loaded on first use, not when the CLI starts.
    from pipeline.gate import watermark as wm
from pipeline.gate.provenance import FORMATS, TRAINED_ALGORITHMIC_MEDIA, parse_xmp
from pipeline.images import decode_image, opened_image

MIN_QUALITY = 40  # max_bytes steps lossy quality down by 10 to at most this
# Our own master, already bounded when it was gated; a rendition is at most 8192 px a side.
MAX_PIXELS = 8192 * 8192


class RenditionError(ValueError):
    """A rendition that cannot be made as configured (over max_bytes, watermark lost)."""


@lru_cache(maxsize=1)
def srgb_profile() -> bytes:
    return bytes(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())


@dataclass(frozen=True)
class Master:
    """A published master, decoded once for all of its renditions."""

    image: Image.Image  # RGB
    xmp: bytes | None  # the raw XMP packet, copied into every rendition
    watermark: wm.WatermarkConfig
    keys: wm.WatermarkKeys  # the deployment's check-code keys (SHOTLINE_WATERMARK_KEY)
    # A white_background slot's master: its pure-white pixels stay 255 in every rendition.
    keep_white: bool = False
    # False: the master says its watermark was omitted (wm.OMITTED_WHITE); so do renditions.
    marked: bool = True

    @classmethod
    def from_bytes(cls, data: bytes, keys: wm.WatermarkKeys | None = None) -> Master:
        from pipeline.gate import watermark as wm

        with opened_image(data, "master", MAX_PIXELS) as im:
            raw = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
        xmp = raw.encode("utf-8") if isinstance(raw, str) else (bytes(raw) if raw else None)
        fields = parse_xmp(xmp) if xmp else {}
        label = fields.get("shotline:Watermark")
        config = wm.WatermarkConfig.from_label(label) if isinstance(label, str) else None
        image = decode_image(data, "master", MAX_PIXELS)
        return cls(
            image,
            xmp,
            config or wm.WatermarkConfig(),
            keys or wm.NO_KEYS,
            keep_white=fields.get("shotline:WatermarkKeep") == "white",
            marked=label != wm.OMITTED_WHITE,
        )


@dataclass(frozen=True)
class Rendition:
    channel: str
    name: str
    data: bytes
    content_type: str
    ext: str
    sha256: str
    width: int
    height: int
    quality: int | None
    watermark_verified: bool
    bit_accuracy: float | None
    xmp_ai_tag: bool
    icc_srgb: bool


def _ratio(aspect: str) -> float:
    w, h = aspect.split(":")
    return int(w) / int(h)


def target_size(
    spec: RenditionSpec, w: int, h: int, min_pixels: int = 0
) -> tuple[int, int, tuple[int, int]]:
    """(canvas width, canvas height, size the master is scaled to before crop or pad).

    A canvas under ``min_pixels`` (a 4:5 crop of a 256 px master) is scaled up to it: the
    watermark needs that many pixels."""
    if spec.width is not None and spec.height is not None:
        cw, ch = spec.width, spec.height
    else:
        cw, ch = w, h
        if spec.aspect is not None:
            r = _ratio(spec.aspect)
            if spec.fit == "crop":  # the largest box of that aspect inside the master
                cw, ch = (round(h * r), h) if w / h > r else (w, round(w / r))
            else:  # the smallest box of that aspect around it
                cw, ch = (w, round(w / r)) if w / h > r else (round(h * r), h)
        if spec.longest_side is not None and max(cw, ch) > spec.longest_side:
            s = spec.longest_side / max(cw, ch)
            cw, ch = max(1, round(cw * s)), max(1, round(ch * s))
        if cw * ch < min_pixels:
            s = (min_pixels / (cw * ch)) ** 0.5
            cw, ch = math.ceil(cw * s), math.ceil(ch * s)
    # Scale the master to cover (crop) or fit inside (pad) the canvas.
    cover = max(cw / w, ch / h)
    fit = min(cw / w, ch / h)
    s = cover if spec.fit == "crop" else fit
    return cw, ch, (max(1, round(w * s)), max(1, round(h * s)))


def fit_pixels(image: Image.Image, spec: RenditionSpec, min_pixels: int = 0) -> Image.Image:
    """The master's pixels on the rendition's canvas (the same object when unchanged)."""
    w, h = image.size
    cw, ch, scaled = target_size(spec, w, h, min_pixels)
    if (cw, ch) == (w, h) and scaled == (w, h):
        return image
    img = image if scaled == (w, h) else image.resize(scaled, Image.Resampling.LANCZOS)
    if scaled == (cw, ch):
        return img
    if spec.fit == "crop":
        left, top = (scaled[0] - cw) // 2, (scaled[1] - ch) // 2
        return img.crop((left, top, left + cw, top + ch))
    canvas = Image.new("RGB", (cw, ch), spec.background)
    canvas.paste(img, ((cw - scaled[0]) // 2, (ch - scaled[1]) // 2))
    return canvas


def encode(image: Image.Image, fmt: str, quality: int, xmp: bytes | None) -> bytes:
    """``image`` as png/jpeg/webp with the sRGB profile and the XMP packet embedded."""
    buf = io.BytesIO()
    kwargs: dict[str, Any] = {"icc_profile": srgb_profile()}
    if fmt == "png":
        return _png(image, xmp)
    if xmp is not None:
        kwargs["xmp"] = xmp
    if fmt == "jpeg":  # 4:4:4: subsampling blurs what the watermark and the product need
        image.save(buf, "JPEG", quality=quality, subsampling=0, **kwargs)
    else:
        # method 2 (of 0-6): half of method 4's encode time, files of the same size here.
        image.save(buf, "WEBP", quality=quality, method=2, **kwargs)
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(image: Image.Image, xmp: bytes | None) -> bytes:
    """PNG by libpng (OpenCV: its row filters and zlib's RLE strategy, 28 ms at 819x1024
    against Pillow's 36-40; within 3 % of Pillow's default size), with the sRGB profile
    (``iCCP``) and the XMP packet (uncompressed ``iTXt``, the keyword XMP readers look for)
    put right after ``IHDR``, where the format requires ``iCCP``."""
    import cv2
    import numpy as np

    bgr = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)
    params = [
        cv2.IMWRITE_PNG_COMPRESSION,
        6,
        cv2.IMWRITE_PNG_STRATEGY,
        cv2.IMWRITE_PNG_STRATEGY_RLE,
    ]
    ok, encoded = cv2.imencode(".png", bgr, params)
    if not ok:
        raise RenditionError(f"PNG encoding failed for a {image.width}x{image.height} image")
    data = encoded.tobytes()
    ihdr_end = 8 + 8 + 13 + 4  # signature, IHDR length + type, IHDR body, CRC
    extra = _chunk(b"iCCP", b"sRGB\0\0" + zlib.compress(srgb_profile()))
    if xmp is not None:
        extra += _chunk(b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0" + xmp)
    return data[:ihdr_end] + extra + data[ihdr_end:]


def _encode_capped(image: Image.Image, spec: RenditionSpec, xmp: bytes | None) -> tuple[bytes, int]:
    quality = spec.quality
    while True:
        data = encode(image, spec.format, quality, xmp)
        if spec.max_bytes is None or len(data) <= spec.max_bytes:
            return data, quality
        if spec.format == "png" or quality <= MIN_QUALITY:
            raise RenditionError(
                f"{spec.name}: {len(data)} bytes at quality {quality}, over max_bytes "
                f"{spec.max_bytes}"
            )
        quality = max(MIN_QUALITY, quality - 10)


def make_rendition(master: Master, channel: str, spec: RenditionSpec, shot_id: int) -> Rendition:
    """One rendition, its watermark decoded from the encoded bytes and checked.

    A master too small to carry a watermark (the tiny preset's 64 px) makes renditions that
    carry none either: they are recorded unverified, as the master's ``watermarks`` row is."""
    from pipeline.gate import watermark as wm

    marks = master.marked and wm.can_embed(master.image)
    pixels = fit_pixels(master.image, spec, wm.MIN_PIXELS if marks else 0)
    if marks and pixels is not master.image:  # resized, cropped or padded: the grid is gone
        marked = wm.embed(pixels, shot_id, master.watermark, master.keys)
        if not marked.embedded:
            raise RenditionError(f"{channel}/{spec.name}: {pixels.size} is too small to watermark")
        if master.keep_white:  # as the master: the mark in the product, the white exact
            marked = replace(marked, image=wm.restore_white(marked.image, pixels))
        pixels = marked.image
    data, quality = _encode_capped(pixels, spec, master.xmp)
    with opened_image(data, "rendition", MAX_PIXELS) as im:
        icc = im.info.get("icc_profile") == srgb_profile()
        raw = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
    xmp = parse_xmp(raw.encode() if isinstance(raw, str) else bytes(raw)) if raw else {}
    verified, accuracy = False, None
    if marks:
        # Decoded again from the encoded bytes: the luma plane alone where the mark is luma.
        decoded = wm.decode_file(data, master.watermark, master.keys)
        if decoded is None:
            own = decode_image(data, "rendition", MAX_PIXELS)
            decoded = wm.decode(own, master.watermark, rescale=(), keys=master.keys)
        verified = decoded.shot_id == shot_id
        accuracy = wm.bit_accuracy(decoded.bits, shot_id, master.keys)
        if not verified:
            raise RenditionError(f"{channel}/{spec.name}: the watermark did not survive encoding")
    content_type, ext = FORMATS[spec.format]
    return Rendition(
        channel=channel,
        name=spec.name,
        data=data,
        content_type=content_type,
        ext=ext,
        sha256=hashlib.sha256(data).hexdigest(),
        width=pixels.width,
        height=pixels.height,
        quality=None if spec.format == "png" else quality,
        watermark_verified=verified,
        bit_accuracy=accuracy,
        xmp_ai_tag=xmp.get("Iptc4xmpExt:DigitalSourceType") == TRAINED_ALGORITHMIC_MEDIA,
        icc_srgb=icc,
    )


def make_renditions(
    data: bytes,
    wanted: Sequence[tuple[str, RenditionSpec]],
    shot_id: int,
    keys: wm.WatermarkKeys | None = None,
) -> list[Rendition]:
    """Every ``(channel, spec)`` rendition of the master ``data``; a re-embedded watermark
    carries the master's check code (``keys``). Two channels asking for the same file (same
    spec but its name) share one encode."""
    if not wanted:
        return []
    master = Master.from_bytes(data, keys)
    made: dict[str, Rendition] = {}
    out = []
    for channel, spec in wanted:
        same = spec.model_dump_json(exclude={"name"})
        r = made.get(same)
        if r is None:
            r = made[same] = make_rendition(master, channel, spec, shot_id)
        out.append(r if (r.channel, r.name) == (channel, spec.name) else _renamed(r, channel, spec))
    return out


def _renamed(r: Rendition, channel: str, spec: RenditionSpec) -> Rendition:
    return replace(r, channel=channel, name=spec.name)


def channel_renditions(channels: dict[str, Any] | None) -> list[tuple[str, RenditionSpec]]:
    """The (channel, spec) pairs of a stored brand config's ``channels`` (JSON)."""
    from pipeline.brand.config import ChannelSpec

    out = []
    for cname, raw in (channels or {}).items():
        spec = ChannelSpec.model_validate(raw)
        out += [(cname, r) for r in spec.renditions]
    return out
