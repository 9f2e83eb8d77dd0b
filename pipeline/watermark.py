"""Invisible watermark that names the shot, built on ``invisible-watermark`` (imwatermark).

Payload: 56 bits = 32-bit shot id + 24-bit check code (keyed BLAKE2b of the id). A random or
unwatermarked image decodes to some bit string too; the check code makes the chance that it
passes as a valid id 2**-24 per decode attempt, so verification means something.

Design choices, each measured with ``tests/benchmarks/bench_watermark.py`` (numbers in the
closing note of the gate issue):

- **Luma, not chroma.** imwatermark's defaults embed in the U channel only. On a flat white
  packshot background any chroma change needs an RGB value above 255, is clipped away, and
  every white block then votes "0": the payload is lost. We embed in Y instead.
- **dwtDctSvd.** It quantises the largest singular value of each 4x4 DCT block of the DWT
  low band, which on a flat block is its brightness; dwtDct quantises the largest AC
  coefficient, which does not exist on a flat block. dwtDctSvd survives white backgrounds,
  JPEG q75 and a 50 % resize; dwtDct does not without darkening the white (``headroom``).
- **Float in, rounded out.** imwatermark truncates when handed uint8 arrays; we hand it
  float32 and round once at the end.
- **Resized copies** are decoded by scaling them back up to candidate original sizes; the
  check code keeps those extra attempts from producing false positives.
- A crop shifts the block grid and the bit order: these methods do not survive cropping.

rivaGan needs ``onnxruntime`` (not installed here) and carries only 32 bits, too few for an
id plus a check code, so it is not offered.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from imwatermark import WatermarkDecoder, WatermarkEncoder
from PIL import Image

ID_BITS = 32
CHECK_BITS = 24
PAYLOAD_BITS = ID_BITS + CHECK_BITS
# imwatermark refuses images with fewer pixels than this.
MIN_PIXELS = 256 * 256
# imwatermark's own default quantisation step; ``strength`` multiplies it.
BASE_STEP = 36.0
# Decode attempts for resized copies: scale factors back to a plausible original size.
RESCALE_FACTORS: tuple[float, ...] = (4 / 3, 2.0, 1.5, 1.25)
METHODS = ("dwtDct", "dwtDctSvd")
_CHECK_KEY = b"shotline-watermark-v1"


class WatermarkError(ValueError):
    """The image cannot carry a watermark (too small) or the configuration is invalid."""


@dataclass(frozen=True)
class WatermarkConfig:
    method: str = "dwtDctSvd"
    strength: float = 1.0
    channel: str = "y"  # "y" (luma, our default) or "u" (imwatermark's default)
    # Highlights are compressed so white sits this many levels below 255, leaving room for
    # the watermark's upward swing. 0 keeps pure white (dwtDctSvd does not need it).
    headroom: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise WatermarkError(f"unknown watermark method {self.method!r}; use one of {METHODS}")
        if self.channel not in ("y", "u"):
            raise WatermarkError(f"unknown watermark channel {self.channel!r}")
        if not 0 < self.strength <= 8:
            raise WatermarkError(f"watermark strength must be in (0, 8], got {self.strength}")

    @property
    def scales(self) -> list[float]:
        step = BASE_STEP * self.strength
        return [step, 0.0, 0.0] if self.channel == "y" else [0.0, step, 0.0]

    @classmethod
    def from_label(cls, label: str) -> WatermarkConfig | None:
        """Parse ``label`` (e.g. ``dwtDctSvd-y-x1`` or ``dwtDct-y-x1-h8``); None if invalid."""
        m = re.fullmatch(r"(dwtDct|dwtDctSvd)-([yu])-x(\d+(?:\.\d+)?)(?:-h(\d{1,2}))?", label)
        if m is None:
            return None
        try:
            return cls(m[1], float(m[3]), m[2], int(m[4] or 0))
        except WatermarkError:
            return None

    @property
    def label(self) -> str:
        return f"{self.method}-{self.channel}-x{self.strength:g}" + (
            f"-h{self.headroom}" if self.headroom else ""
        )


@dataclass(frozen=True)
class EmbedResult:
    image: Image.Image
    payload: str  # hex of the 7 payload bytes
    method: str  # WatermarkConfig.label, or "none" when the image is too small
    embedded: bool


@dataclass(frozen=True)
class DecodeResult:
    shot_id: int | None  # set only when the check code verified
    verified: bool
    bits: np.ndarray  # the decoded bits of the attempt reported (valid one, else as-is)
    scale: float  # the rescale factor of that attempt (1.0 = as-is)


def check_code(shot_id: int) -> int:
    digest = hashlib.blake2b(shot_id.to_bytes(4, "big"), key=_CHECK_KEY, digest_size=8).digest()
    return int.from_bytes(digest[: CHECK_BITS // 8], "big")


def make_payload(shot_id: int) -> bytes:
    """The 7 payload bytes for ``shot_id`` (0 <= id < 2**32)."""
    if not 0 <= shot_id < 2**ID_BITS:
        raise WatermarkError(f"shot id {shot_id} does not fit in {ID_BITS} bits")
    return shot_id.to_bytes(4, "big") + check_code(shot_id).to_bytes(CHECK_BITS // 8, "big")


def payload_bits(shot_id: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(make_payload(shot_id), dtype=np.uint8)).astype(bool)


def parse_bits(bits: Sequence[int] | np.ndarray) -> int | None:
    """The shot id if ``bits`` carry a valid check code, else None."""
    arr = np.asarray(bits, dtype=np.uint8)
    if arr.size != PAYLOAD_BITS:
        return None
    data = np.packbits(arr).tobytes()
    shot_id = int.from_bytes(data[:4], "big")
    check = int.from_bytes(data[4:], "big")
    return shot_id if check == check_code(shot_id) else None


def _to_bgr_float(image: Image.Image) -> np.ndarray:
    if image.mode in ("RGBA", "LA", "P"):
        # Transparent packshots are flattened on white: that is how shops display them.
        rgba = image.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(bg, rgba)
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _to_image(bgr: np.ndarray) -> Image.Image:
    rgb = np.clip(np.rint(bgr[:, :, ::-1]), 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(rgb), "RGB")


def _compress_highlights(bgr: np.ndarray, headroom: int) -> np.ndarray:
    # Only values above the knee move, so mid-tones and the product itself are untouched.
    knee = 192.0
    top = 255.0 - headroom
    out = bgr.copy()
    hi = out > knee
    out[hi] = knee + (out[hi] - knee) * (top - knee) / (255.0 - knee)
    return out


def can_embed(image: Image.Image) -> bool:
    return image.width * image.height >= MIN_PIXELS


def embed(image: Image.Image, shot_id: int, config: WatermarkConfig) -> EmbedResult:
    """Watermark ``image`` with the shot's payload. Images below 256x256 are returned as-is
    with ``embedded=False`` (imwatermark cannot embed in them)."""
    payload = make_payload(shot_id)
    if not can_embed(image):
        return EmbedResult(
            image=image.convert("RGB"), payload=payload.hex(), method="none", embedded=False
        )
    bgr = _to_bgr_float(image)
    if config.headroom:
        bgr = _compress_highlights(bgr, config.headroom)
    encoder = WatermarkEncoder()
    encoder.set_watermark("bytes", payload)
    out = encoder.encode(bgr, config.method, scales=config.scales)
    return EmbedResult(
        image=_to_image(out), payload=payload.hex(), method=config.label, embedded=True
    )


def _decode_bits(bgr: np.ndarray, config: WatermarkConfig) -> np.ndarray:
    decoder = WatermarkDecoder("bits", PAYLOAD_BITS)
    bits = decoder.decode(bgr, config.method, scales=config.scales)
    return np.asarray(bits, dtype=bool)


def decode(
    image: Image.Image,
    config: WatermarkConfig,
    rescale: Sequence[float] = RESCALE_FACTORS,
) -> DecodeResult:
    """Decode the payload; try the image as-is, then scaled back up by each of ``rescale``."""
    bgr = _to_bgr_float(image)
    h, w = bgr.shape[:2]
    if h * w < MIN_PIXELS:
        return DecodeResult(None, False, np.zeros(PAYLOAD_BITS, dtype=bool), 1.0)
    first = _decode_bits(bgr, config)
    shot_id = parse_bits(first)
    if shot_id is not None:
        return DecodeResult(shot_id, True, first, 1.0)
    for factor in rescale:
        size = (round(w * factor), round(h * factor))
        scaled = cv2.resize(bgr, size, interpolation=cv2.INTER_CUBIC)
        bits = _decode_bits(scaled, config)
        shot_id = parse_bits(bits)
        if shot_id is not None:
            return DecodeResult(shot_id, True, bits, factor)
    return DecodeResult(None, False, first, 1.0)


def bit_accuracy(bits: np.ndarray, shot_id: int) -> float:
    """Fraction of decoded bits that agree with ``shot_id``'s payload."""
    return float(np.mean(np.asarray(bits, dtype=bool) == payload_bits(shot_id)))
