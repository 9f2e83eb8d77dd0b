"""Invisible watermark that names the shot, built on ``invisible-watermark`` (imwatermark).

Payload: 56 bits = 32-bit shot id + 4-bit key id + 20-bit check code (BLAKE2b of id and key
id, keyed with the deployment's secret ``SHOTLINE_WATERMARK_KEY``). Without the secret nobody
can stamp an image with a check code that verifies, and the key id lets keys rotate: old
keys stay listed for verifying only. A random or unwatermarked image decodes to some bit
string too; the check code makes the chance that it passes as a valid id 2**-20 per decode
attempt and key.

Payloads written before keys existed (key id "legacy") are 32-bit id + 24-bit check keyed
with a constant in this source: anyone with the code can forge them. They still verify
(``WatermarkKeys.accept_legacy``) and every report says "unkeyed". A deployment without
``SHOTLINE_WATERMARK_KEY`` still writes them, and ``shotline doctor``-style reports say so.

Design choices, each measured with ``tests/benchmarks/bench_watermark.py`` (200 generated
1024^2 images, half pure-white packshots; figures from the 2-core dev box):

- **Luma, not chroma.** imwatermark's defaults embed in the U channel only. On a flat white
  background any chroma change needs an RGB value above 255, is clipped away, and every
  white block votes the same bit: 0 % recovery on white packshots. We embed in Y.
- **dwtDctSvd, strength 1 (step 36).** It quantises the largest singular value of each 4x4
  DCT block of the DWT low band: on a flat block, its brightness. dwtDct quantises the
  largest AC coefficient, which a flat block does not have (and is unstable on texture).
  dwtDctSvd-y-x1: 100 % payload recovery after JPEG q95/q85/q75, 75 % and 50 % resizes and
  PNG->WebP; PSNR 44 dB; 0 false positives in 1000 unmarked images.
- **Pure white and the step.** A flat 255 block has s0 = 2040; with step 36 that lies in the
  "1" half of the step (2040 mod 36 = 24), so "0" blocks darken by ~2 levels and "1" blocks
  stay at 255 even though their upward push is clipped. Steps whose white lands in the "0"
  half (x0.5: 2040 mod 18 = 6) lose every white image; ``headroom`` (lowering white) is the
  remedy for those, at the cost of a grey background. A brightness edit of the background
  alone can flip white blocks; the product region still carries the payload.
- **Pure-white blocks may abstain.** A block whose pixels are all RGB 255 (its Haar low
  band all 510) reads as "1": right for a marked "1" block (its push was clipped), wrong
  where the white was put back after marking. So each attempt reads two bit strings, the
  imwatermark one and one with pure-white blocks abstaining, and the check code picks (the
  false-positive rate per attempt doubles to 2**-19, as with the rescale attempts). That
  lets a white_background slot's shot keep its background exactly 255
  (``KeepPixels.white``: the mark lives in the product only) and still verify; measured in
  docs/benchmarks.md (``bench_watermark.py --keep-white``). Stock imwatermark reads only
  the first string, so it cannot read such a file.
- **Fast path.** imwatermark's dwtDctSvd loops over blocks in Python (0.33 s + 0.18 s per
  1024^2 image here). ``_svd_encode``/``_svd_decode`` are the same algorithm and bitstream
  batched in numpy (0.013 s + 0.007 s; see the section below for how); stock imwatermark
  decodes our images and vice versa.
- **imwatermark bug.** Its ``idwt2`` call swaps the horizontal and vertical detail bands,
  smearing every edge (PSNR ~32 dB on textured images whatever the strength); the package
  path restores them (``_restore_detail_bands``), the fast path never touches them.
- **Float in, rounded out.** imwatermark truncates uint8 input; we hand it float32.
- **Resized copies** are decoded by scaling them back up to candidate original sizes; the
  check code keeps those extra attempts from producing false positives.
- **Crops are not survived**: a crop shifts the block grid and the bit order (0 % after a
  10 % crop, all methods). The XMP and C2PA metadata are the fallback there.

rivaGan is not offered: its ONNX weights ship in the wheel but ``onnxruntime`` is not
installed, and it carries only 32 bits, too few for a 32-bit id plus a check code (an 8-bit
check would let about 1 random image in 50 verify over our 5 decode attempts).
"""

from __future__ import annotations

import hashlib
import re
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import pywt
from PIL import Image

from pipeline.types import WATERMARK_OMITTED_WHITE


def _stub_rivagan() -> None:
    """Keep imwatermark's RivaGAN module out: the package imports it, and it imports torch,
    at import time (about 570 MB of a cpu worker's RSS, measured) for a method shotline never
    uses. Where torch is loaded anyway (the GPU host) the stub costs nothing either."""
    name = "imwatermark.rivaGan"
    if name in sys.modules:
        return
    stub = types.ModuleType(name)

    class RivaWatermark:
        def __init__(self, *_args: object, **_kwargs: object) -> None:
            raise RuntimeError("imwatermark's rivaGan method is not available in shotline")

    stub.RivaWatermark = RivaWatermark  # type: ignore[attr-defined]
    sys.modules[name] = stub


_stub_rivagan()
from imwatermark import WatermarkDecoder, WatermarkEncoder  # noqa: E402  (after the stub)

ID_BITS = 32
CHECK_BITS = 24  # legacy payloads: the whole tail is the check code
KEY_ID_BITS = 4
KEYED_CHECK_BITS = CHECK_BITS - KEY_ID_BITS
PAYLOAD_BITS = ID_BITS + CHECK_BITS
MAX_KEY_ID = 2**KEY_ID_BITS - 1  # key ids run 1..15
LEGACY = "legacy"
# imwatermark refuses images with fewer pixels than this.
MIN_PIXELS = 256 * 256
# imwatermark's own default quantisation step; ``strength`` multiplies it.
BASE_STEP = 36.0
# Decode attempts for resized copies: scale factors back to a plausible original size.
RESCALE_FACTORS: tuple[float, ...] = (4 / 3, 2.0, 1.5, 1.25)
METHODS = ("dwtDct", "dwtDctSvd")
MAX_DECODE_PIXELS = 6144 * 6144
MAX_LABEL_CHARS = 20  # the width of watermarks.method
OMITTED_WHITE = WATERMARK_OMITTED_WHITE  # a white_background shot published unmarked
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
    # "fast": our vectorised dwtDctSvd (same bitstream); "imwatermark": the package's loops.
    engine: str = "fast"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise WatermarkError(f"unknown watermark method {self.method!r}; use one of {METHODS}")
        if self.channel not in ("y", "u"):
            raise WatermarkError(f"unknown watermark channel {self.channel!r}")
        if self.engine not in ("fast", "imwatermark"):
            raise WatermarkError(f"unknown watermark engine {self.engine!r}")
        if not 0 < self.strength <= 8:
            raise WatermarkError(f"watermark strength must be in (0, 8], got {self.strength}")
        if not 0 <= self.headroom <= 64:
            raise WatermarkError(f"watermark headroom must be in [0, 64], got {self.headroom}")
        if len(self.label.removesuffix("-imw")) > MAX_LABEL_CHARS:
            raise WatermarkError(
                f"watermark config {self.label!r} is too long to record "
                f"(watermarks.method holds {MAX_LABEL_CHARS} chars): use at most 2 decimals"
            )

    @property
    def scales(self) -> list[float]:
        step = BASE_STEP * self.strength
        return [step, 0.0, 0.0] if self.channel == "y" else [0.0, step, 0.0]

    @classmethod
    def from_label(cls, label: str) -> WatermarkConfig | None:
        """Parse a ``label`` (``dwtDctSvd-y-x1``, ``dwtDct-y-x1.5-h8``, ``...-imw`` for the
        package's own loops); None when it is not one of ours."""
        m = re.fullmatch(
            r"(dwtDct|dwtDctSvd)-([yu])-x(\d+(?:\.\d+)?)(?:-h(\d{1,2}))?(-imw)?", label
        )
        if m is None:
            return None
        engine = "imwatermark" if m[5] else "fast"
        try:
            return cls(m[1], float(m[3]), m[2], int(m[4] or 0), engine)
        except WatermarkError:
            return None

    @property
    def label(self) -> str:
        # The engine is not part of the bitstream, but the label names what produced it.
        head = f"{self.method}-{self.channel}-x{self.strength:g}"
        tail = (f"-h{self.headroom}" if self.headroom else "") + (
            "-imw" if self.engine == "imwatermark" and self.method == "dwtDctSvd" else ""
        )
        return head + tail


@dataclass(frozen=True)
class WatermarkKeys:
    """The deployment's check-code keys: ``current`` (the key id new payloads carry, None:
    unkeyed legacy payloads) and every key id -> secret that still verifies."""

    current: int | None = None
    secrets: tuple[tuple[int, bytes], ...] = ()
    accept_legacy: bool = True

    def __post_init__(self) -> None:
        ids = [kid for kid, _ in self.secrets]
        if any(not 1 <= kid <= MAX_KEY_ID for kid in ids) or len(set(ids)) != len(ids):
            raise WatermarkError(f"watermark key ids must be distinct, 1..{MAX_KEY_ID}")
        if any(len(secret) < 16 for _, secret in self.secrets):
            raise WatermarkError("a watermark key must be at least 16 characters")
        if self.current is not None and self.current not in ids:
            raise WatermarkError(f"no secret for the current watermark key id {self.current}")

    def secret(self, key_id: int) -> bytes | None:
        return dict(self.secrets).get(key_id)

    def writing(self, key_id: int | str | None) -> WatermarkKeys:
        """These keys with ``key_id`` as the current one (LEGACY/None: the unkeyed payload),
        to compare decoded bits with the payload that key writes."""
        kid = key_id if isinstance(key_id, int) and self.secret(key_id) else None
        return WatermarkKeys(kid, self.secrets, self.accept_legacy)

    @classmethod
    def parse(
        cls, current: str | None, old: Sequence[str] = (), legacy: bool = True
    ) -> WatermarkKeys:
        """From settings: ``current`` is ``SECRET`` (key id 1) or ``ID:SECRET``; ``old`` holds
        ``ID:SECRET`` entries of retired keys, verified but never written."""
        entries: list[tuple[int, bytes]] = []
        now = None
        for i, text in enumerate([current, *old] if current else list(old)):
            head, sep, tail = text.partition(":")
            if sep and head.isdigit() and head.isascii():
                kid, secret = int(head), tail
            elif i == 0 and current:
                kid, secret = 1, text
            else:
                raise WatermarkError("an old watermark key must be ID:SECRET (ID 1..15)")
            entries.append((kid, secret.encode("utf-8")))
            if i == 0 and current:
                now = kid
        return WatermarkKeys(now, tuple(entries), legacy)


NO_KEYS = WatermarkKeys()


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
    key_id: int | str | None = None  # the key whose check code verified, or LEGACY


def _legacy_check(shot_id: int) -> int:
    digest = hashlib.blake2b(shot_id.to_bytes(4, "big"), key=_CHECK_KEY, digest_size=8).digest()
    return int.from_bytes(digest[: CHECK_BITS // 8], "big")


def _keyed_check(shot_id: int, key_id: int, secret: bytes) -> int:
    message = shot_id.to_bytes(4, "big") + bytes([key_id])
    digest = hashlib.blake2b(message, key=secret[:64], digest_size=8).digest()
    return int.from_bytes(digest[:3], "big") >> KEY_ID_BITS  # the top 20 bits


def check_code(shot_id: int) -> int:
    """The legacy (unkeyed) check code: kept so payloads written before keys still verify."""
    return _legacy_check(shot_id)


def make_payload(shot_id: int, keys: WatermarkKeys = NO_KEYS) -> bytes:
    """The 7 payload bytes for ``shot_id`` (0 <= id < 2**32) under ``keys.current`` (no
    current key: the legacy unkeyed payload)."""
    if not 0 <= shot_id < 2**ID_BITS:
        raise WatermarkError(f"shot id {shot_id} does not fit in {ID_BITS} bits")
    head = shot_id.to_bytes(4, "big")
    kid = keys.current
    secret = keys.secret(kid) if kid is not None else None
    if kid is None or secret is None:
        return head + _legacy_check(shot_id).to_bytes(CHECK_BITS // 8, "big")
    tail = (kid << KEYED_CHECK_BITS) | _keyed_check(shot_id, kid, secret)
    return head + tail.to_bytes(CHECK_BITS // 8, "big")


def payload_bits(shot_id: int, keys: WatermarkKeys = NO_KEYS) -> np.ndarray:
    return np.unpackbits(np.frombuffer(make_payload(shot_id, keys), dtype=np.uint8)).astype(bool)


def parse_payload(
    bits: Sequence[int] | np.ndarray, keys: WatermarkKeys = NO_KEYS
) -> tuple[int, int | str] | None:
    """(shot id, key id or LEGACY) if ``bits`` carry a check code that verifies under one of
    ``keys`` (or the legacy code, when accepted), else None."""
    arr = np.asarray(bits, dtype=np.uint8)
    if arr.size != PAYLOAD_BITS:
        return None
    data = np.packbits(arr).tobytes()
    shot_id = int.from_bytes(data[:4], "big")
    tail = int.from_bytes(data[4:], "big")
    kid = tail >> KEYED_CHECK_BITS
    secret = keys.secret(kid)
    if secret is not None and tail & ((1 << KEYED_CHECK_BITS) - 1) == _keyed_check(
        shot_id, kid, secret
    ):
        return shot_id, kid
    if keys.accept_legacy and tail == _legacy_check(shot_id):
        return shot_id, LEGACY
    return None


def parse_bits(bits: Sequence[int] | np.ndarray, keys: WatermarkKeys = NO_KEYS) -> int | None:
    """The shot id if ``bits`` carry a valid check code, else None."""
    found = parse_payload(bits, keys)
    return found[0] if found is not None else None


def _to_rgb_float(image: Image.Image) -> np.ndarray:
    if image.mode in ("RGBA", "LA", "P"):
        # Transparent packshots are flattened on white: that is how shops display them.
        rgba = image.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(bg, rgba)
    return np.asarray(image.convert("RGB") if image.mode != "RGB" else image, dtype=np.float32)


def _to_bgr_float(image: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(_to_rgb_float(image)[:, :, ::-1])


def _rgb_image(rgb: np.ndarray) -> Image.Image:
    """Rounded and clipped in place: ``rgb`` (float, owned by the caller) is spent."""
    np.rint(rgb, out=rgb)
    np.clip(rgb, 0, 255, out=rgb)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def _to_image(bgr: np.ndarray) -> Image.Image:
    return _rgb_image(np.ascontiguousarray(bgr[:, :, ::-1]))


def _compress_highlights(bgr: np.ndarray, headroom: int) -> np.ndarray:
    # Only values above the knee move, so mid-tones and the product itself are untouched.
    knee = 192.0
    top = 255.0 - headroom
    # The same arithmetic as mapping only the values above the knee, but over the whole array
    # and selected with np.where: boolean fancy indexing was 4x slower (24 ms at 1024^2).
    squeezed = knee + (bgr - knee) * (top - knee) / (255.0 - knee)
    return np.where(bgr > knee, squeezed, bgr)


def _restore_detail_bands(bgr: np.ndarray, config: WatermarkConfig) -> np.ndarray:
    """Undo imwatermark's swapped detail bands.

    imwatermark (0.2) rebuilds each channel with ``idwt2((cA, (cV, cH, cD)))`` after
    ``dwt2`` returned ``(cA, (cH, cV, cD))``: horizontal and vertical detail trade places,
    which smears every edge and texture (PSNR ~32 dB on textured images whatever the
    strength). The watermark lives only in cA, so swapping them back is exact and leaves the
    payload untouched.
    """
    yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV)
    row, col = yuv.shape[:2]
    r4, c4 = row // 4 * 4, col // 4 * 4
    for channel, scale in enumerate(config.scales[:2]):
        if scale <= 0:
            continue
        ca, (swapped_v, swapped_h, cd) = pywt.dwt2(yuv[:r4, :c4, channel], "haar")
        yuv[:r4, :c4, channel] = pywt.idwt2((ca, (swapped_h, swapped_v, cd)), "haar")
    return cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR)


def white_mask(original: Image.Image) -> np.ndarray:
    """(H, W) bool: the pixels of ``original`` that are pure white (RGB 255)."""
    rgb = np.asarray(original.convert("RGB"))
    # cv2.inRange: a reduction over the last axis of 3 is ~10x slower in numpy.
    return np.asarray(cv2.inRange(rgb, (255, 255, 255), (255, 255, 255)) > 0)


def restore_white(marked: Image.Image, original: Image.Image) -> Image.Image:
    """``marked`` with RGB 255 wherever ``original`` (before the mark) was pure white: a
    white_background slot's background stays exact and the mark lives in the rest, which
    the decoder reads (pure-white blocks abstain)."""
    arr = np.array(marked.convert("RGB"), dtype=np.uint8)
    arr[white_mask(original)] = 255
    return Image.fromarray(arr, "RGB")


def can_embed(image: Image.Image) -> bool:
    return image.width * image.height >= MIN_PIXELS


def embed(
    image: Image.Image, shot_id: int, config: WatermarkConfig, keys: WatermarkKeys = NO_KEYS
) -> EmbedResult:
    """Watermark ``image`` with the shot's payload. Images below 256x256 are returned as-is
    with ``embedded=False`` (imwatermark cannot embed in them)."""
    payload = make_payload(shot_id, keys)
    if not can_embed(image):
        return EmbedResult(
            image=image.convert("RGB"), payload=payload.hex(), method="none", embedded=False
        )
    bits = np.unpackbits(np.frombuffer(payload, dtype=np.uint8)).astype(np.float64)
    if _fast(config) and _luma_only(config.scales):
        rgb = _to_rgb_float(image)
        if config.headroom:
            rgb = _compress_highlights(rgb, config.headroom)
        marked = _rgb_image(_luma_encode(rgb, bits, config.scales[0], cv2.COLOR_RGB2GRAY))
        return EmbedResult(marked, payload=payload.hex(), method=config.label, embedded=True)
    bgr = _to_bgr_float(image)
    if config.headroom:
        bgr = _compress_highlights(bgr, config.headroom)
    if _fast(config):
        out = _svd_encode(bgr, bits, config.scales)
    else:
        encoder = WatermarkEncoder()
        encoder.set_watermark("bytes", payload)
        out = encoder.encode(bgr, config.method, scales=config.scales)
        out = _restore_detail_bands(out, config)
    return EmbedResult(
        image=_to_image(out), payload=payload.hex(), method=config.label, embedded=True
    )


# --- vectorised dwtDctSvd -----------------------------------------------------------------
# imwatermark's dwtDctSvd loops over every 4x4 block in Python (0.4-0.6 s per 1024^2 image on
# this CPU). This is the same algorithm and bitstream, batched in numpy: stock imwatermark
# decodes what it writes and vice versa (tests/pipeline/test_watermark.py checks both ways).
#
# Two identities keep it cheap (renditions verify three files per master, issue 25):
# - The 4x4 DCT is orthonormal, so a block and its DCT have the same singular values, and
#   the rank-1 update of the largest one maps back to pixels as the same rank-1 update of the
#   pixel block along its own singular vectors: no DCT is computed at all.
# - Y-only marks (our default) change Y alone, and YUV->RGB adds a Y change to R, G and B
#   alike: the luma plane is all that is read, and the change is added to every channel,
#   instead of converting the whole image to YUV and back.
_BLOCK = 4
# The orthonormal DCT-II matrix: cv2.dct(block) == _DCT @ block @ _DCT.T for 4x4 blocks.
_DCT = np.array(
    [
        [
            np.sqrt((1 if k == 0 else 2) / _BLOCK) * np.cos(np.pi * (2 * n + 1) * k / (2 * _BLOCK))
            for n in range(_BLOCK)
        ]
        for k in range(_BLOCK)
    ]
)
# A zero block's singular vectors: LAPACK's SVD of its (zero) DCT gives the DC basis vector,
# which is the constant vector in pixels.
_FLAT = _DCT[0]
# Power iteration from the constant vector; a block whose residual is still above
# _POWER_TOL * its eigenvalue after _POWER_STEPS (rare: two nearly equal singular values)
# gets LAPACK's eigh instead. _POWER_TOL keeps s0 within about 1e-3 of exact.
_POWER_STEPS = 4
# A Haar low-band value at least this is a 2x2 group of pure white (Y 255, sum 1020 / 2).
_WHITE_LL = 510.0 - 0.01
_POWER_TOL = 1e-7


def _blocks(band: np.ndarray) -> tuple[np.ndarray, int, int]:
    """(nb, 4, 4) blocks of ``band`` in imwatermark's raster order, plus the block grid."""
    nr, nc = band.shape[0] // _BLOCK, band.shape[1] // _BLOCK
    view = band[: nr * _BLOCK, : nc * _BLOCK].reshape(nr, _BLOCK, nc, _BLOCK)
    return view.transpose(0, 2, 1, 3).reshape(nr * nc, _BLOCK, _BLOCK), nr, nc


def _haar_ll(channel: np.ndarray) -> np.ndarray:
    # The orthonormal Haar low band (what pywt.dwt2(..., "haar")[0] returns): 2x2 sums / 2.
    c = channel.astype(np.float64)
    return (c[0::2, 0::2] + c[0::2, 1::2] + c[1::2, 0::2] + c[1::2, 1::2]) / 2.0


Gram = list[list[np.ndarray]]  # [i][j]: (n,) entry (i, j) of each block's B^T B


def _gram(blocks: np.ndarray) -> Gram:
    """B^T B of each 4x4 block, as 4x4 arrays of (n,) entries (the symmetric ones shared):
    ten column dot products, and the power steps below run on whole columns (a batched
    matmul of 4x4 matrices costs three times as much)."""
    cols = [np.ascontiguousarray(blocks[:, :, i]) for i in range(_BLOCK)]
    gram: Gram = [[cols[0][:, 0]] * _BLOCK for _ in range(_BLOCK)]
    for i in range(_BLOCK):
        for j in range(i, _BLOCK):
            gram[i][j] = gram[j][i] = np.einsum("nk,nk->n", cols[i], cols[j])
    return gram


def _apply(gram: Gram, v: list[np.ndarray]) -> list[np.ndarray]:
    return [sum((row[j] * v[j] for j in range(1, _BLOCK)), row[0] * v[0]) for row in gram]


def _norm(v: list[np.ndarray]) -> np.ndarray:
    out: np.ndarray = np.sqrt(sum((x * x for x in v[1:]), v[0] * v[0]))
    return out


def _top_s0(blocks: np.ndarray) -> np.ndarray:
    """Largest singular value of each 4x4 block (what the decoder reads)."""
    return _power(_gram(blocks))[0]


def _power(gram: Gram) -> tuple[np.ndarray, np.ndarray]:
    """(s0, v0) of each block from its Gram matrix: power iteration, eigh where slow."""
    n = len(gram[0][0])
    v = [np.full(n, _FLAT[j]) for j in range(_BLOCK)]
    for _ in range(_POWER_STEPS):
        w = _apply(gram, v)
        scale = 1.0 / np.maximum(_norm(w), 1e-300)
        v = [x * scale for x in w]
    mv = _apply(gram, v)
    lam = sum((a * b for a, b in zip(v[1:], mv[1:], strict=True)), v[0] * mv[0])
    slow = _norm([m - lam * x for m, x in zip(mv, v, strict=True)]) > _POWER_TOL * np.maximum(
        lam, 1.0
    )
    vec = np.stack(v, axis=1)
    if slow.any():
        full = np.stack([np.stack([g[slow] for g in row], axis=1) for row in gram], axis=1)
        w_slow, v_slow = np.linalg.eigh(full)
        lam[slow], vec[slow] = w_slow[:, -1], v_slow[:, :, -1]
    return np.sqrt(np.maximum(lam, 0.0)), vec


def _top_singular(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Largest singular value and its vectors of each 4x4 block (batched)."""
    s0, v = _power(_gram(blocks))
    flat = s0 <= 1e-9
    v[flat] = _FLAT
    u = (blocks @ v[:, :, None])[:, :, 0] / np.where(flat, 1.0, s0)[:, None]
    u[flat] = _FLAT
    return s0, u, v


def _band_delta(plane: np.ndarray, bits: np.ndarray, scale: float) -> np.ndarray:
    """The change to ``plane`` (one YUV channel, rows and columns multiples of 4) that sets
    each block's largest singular value of the Haar low band to its bit's quantisation bin."""
    ca = _haar_ll(plane)
    blocks, nr, nc = _blocks(ca)
    s0, u0, v0 = _top_singular(blocks)
    wm_bits = bits[np.arange(len(blocks)) % len(bits)]
    target = (s0 // scale + 0.25 + 0.5 * wm_bits) * scale
    # Only the largest singular value changes: a rank-1 update of each block.
    delta = (target - s0)[:, None, None] * (u0[:, :, None] * v0[:, None, :])
    delta_ll = np.zeros_like(ca)
    delta_ll[: nr * _BLOCK, : nc * _BLOCK] = (
        delta.reshape(nr, nc, _BLOCK, _BLOCK).transpose(0, 2, 1, 3).reshape(nr * _BLOCK, -1)
    )
    # Inverse Haar of a low-band change: each 2x2 pixel group moves by delta / 2.
    half = (delta_ll / 2.0).astype(np.float32)
    return cv2.resize(half, (2 * half.shape[1], 2 * half.shape[0]), interpolation=cv2.INTER_NEAREST)


def _luma_only(scales: Sequence[float]) -> bool:
    return scales[0] > 0 and scales[1] <= 0


def _fast(config: WatermarkConfig) -> bool:
    return config.method == "dwtDctSvd" and config.engine == "fast"


def _luma_encode(pixels: np.ndarray, bits: np.ndarray, scale: float, to_gray: int) -> np.ndarray:
    """``pixels`` (float RGB or BGR, changed in place) with the mark added to their luma:
    YUV's Y has the grey weights, and YUV->RGB adds a change of Y to each channel alike."""
    row, col = pixels.shape[:2]
    r4, c4 = row // 4 * 4, col // 4 * 4
    region = pixels[:r4, :c4]
    delta = _band_delta(cv2.cvtColor(region, to_gray), bits, scale).astype(pixels.dtype)
    # The same change in each channel, as a 3-channel array: a broadcast over the last axis
    # (inner loops of 3) took 13 ms at 1024^2, this 2 ms.
    np.add(region, cv2.merge([delta, delta, delta]), out=region)
    return pixels


def _svd_encode(bgr: np.ndarray, bits: np.ndarray, scales: Sequence[float]) -> np.ndarray:
    row, col = bgr.shape[:2]
    r4, c4 = row // 4 * 4, col // 4 * 4
    if _luma_only(scales):
        return _luma_encode(bgr.copy(), bits, scales[0], cv2.COLOR_BGR2GRAY)
    yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV)
    for channel, scale in enumerate(scales[:2]):  # imwatermark only visits Y and U
        if scale > 0:
            delta = _band_delta(yuv[:r4, :c4, channel], bits, scale)
            yuv[:r4, :c4, channel] += delta.astype(yuv.dtype)
    return cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR)


def _svd_decode(planes: np.ndarray, scales: Sequence[float], n_bits: int) -> list[np.ndarray]:
    """Bits from ``planes``: (H, W, 1) luma for a Y-only mark, else (H, W, 3) YUV. The
    imwatermark reading first; then, where the luma has pure-white blocks, the reading with
    those abstaining (a kept-white background, see the module docstring)."""
    row, col = planes.shape[:2]
    r4, c4 = row // 4 * 4, col // 4 * 4
    votes, counts = np.zeros((2, n_bits)), np.zeros((2, n_bits))
    any_white = False
    for channel, scale in enumerate(scales[: planes.shape[2]]):
        if scale <= 0:
            continue
        blocks, _, _ = _blocks(_haar_ll(planes[:r4, :c4, channel]))
        s0 = _top_s0(blocks) if len(blocks) else np.zeros(0)
        score = (s0 % scale) > 0.5 * scale
        idx = np.arange(len(blocks)) % n_bits
        live = np.ones(len(blocks), dtype=bool)
        if channel == 0:  # luma
            live = blocks.reshape(len(blocks), -1).min(axis=1) < _WHITE_LL
            any_white = any_white or not live.all()
        everyone = np.ones(len(blocks), dtype=bool)
        for i, voting in enumerate((everyone, live)):
            votes[i] += np.bincount(idx[voting], weights=score[voting], minlength=n_bits)
            counts[i] += np.bincount(idx[voting], minlength=n_bits)
    # imwatermark's rule: mean score * 255 > 127.
    bits = (votes / np.maximum(counts, 1)) * 255 > 127
    return [bits[0], bits[1]] if any_white else [bits[0]]


def _fast_planes(image: Image.Image, config: WatermarkConfig) -> np.ndarray | None:
    """What the fast decoder reads (see ``_svd_decode``); None for the package's decoders."""
    if not _fast(config):
        return None
    if _luma_only(config.scales):
        return cv2.cvtColor(_to_rgb_float(image), cv2.COLOR_RGB2GRAY)[:, :, None]
    return cv2.cvtColor(_to_bgr_float(image), cv2.COLOR_BGR2YUV)


def _decode_bits(pixels: np.ndarray, config: WatermarkConfig, fast: bool) -> list[np.ndarray]:
    """Candidate bit strings from ``pixels``: ``_fast_planes`` when ``fast``, else float BGR."""
    if fast:
        return _svd_decode(pixels, config.scales, PAYLOAD_BITS)
    decoder = WatermarkDecoder("bits", PAYLOAD_BITS)
    bits = decoder.decode(pixels, config.method, scales=config.scales)
    return [np.asarray(bits, dtype=bool)]


def _first_valid(
    candidates: list[np.ndarray], keys: WatermarkKeys, scale: float
) -> DecodeResult | None:
    for bits in candidates:
        found = parse_payload(bits, keys)
        if found is not None:
            return DecodeResult(found[0], True, bits, scale, found[1])
    return None


def decode(
    image: Image.Image,
    config: WatermarkConfig,
    rescale: Sequence[float] = RESCALE_FACTORS,
    keys: WatermarkKeys = NO_KEYS,
) -> DecodeResult:
    """Decode the payload; try the image as-is, then scaled back up by each of ``rescale``.
    Each attempt may read two bit strings (``_svd_decode``); the check code decides."""
    w, h = image.size
    if h * w < MIN_PIXELS:
        return DecodeResult(None, False, np.zeros(PAYLOAD_BITS, dtype=bool), 1.0)
    planes = _fast_planes(image, config)
    fast = planes is not None
    pixels = planes if planes is not None else _to_bgr_float(image)
    first = _decode_bits(pixels, config, fast)
    found = _first_valid(first, keys, 1.0)
    if found is not None:
        return found
    for factor in rescale:
        size = (round(w * factor), round(h * factor))
        if size[0] * size[1] > MAX_DECODE_PIXELS:
            continue  # an upscaled copy of a huge file would cost gigabytes for nothing
        # Resizing is linear per channel: resizing the planes is resizing the image.
        scaled = cv2.resize(pixels, size, interpolation=cv2.INTER_CUBIC)
        found = _first_valid(
            _decode_bits(scaled.reshape(size[1], size[0], -1), config, fast), keys, factor
        )
        if found is not None:
            return found
    return DecodeResult(None, False, first[0], 1.0)


def decode_file(
    data: bytes, config: WatermarkConfig, keys: WatermarkKeys = NO_KEYS
) -> DecodeResult | None:
    """The payload of a file this process just encoded (a rendition being verified), read
    as-is, without rescale attempts. A Y-only mark is read from the luma plane the codec hands
    out (libjpeg gives Y without converting colours or upsampling chroma): integer luma,
    within half a level of the float one, far inside the quantisation margin (a quarter
    step, 9 levels). None when ``config`` needs the whole image: decode it and call
    ``decode``. Only for our own bytes: there is no pixel cap here beyond OpenCV's."""
    if not (_fast(config) and _luma_only(config.scales)):
        return None
    flags = cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION
    luma = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if luma is None:
        raise WatermarkError("the encoded file does not decode")
    if luma.size < MIN_PIXELS:
        return DecodeResult(None, False, np.zeros(PAYLOAD_BITS, dtype=bool), 1.0)
    candidates = _svd_decode(luma[:, :, None], config.scales, PAYLOAD_BITS)
    found = _first_valid(candidates, keys, 1.0)
    return found if found is not None else DecodeResult(None, False, candidates[0], 1.0)


def bit_accuracy(bits: np.ndarray, shot_id: int, keys: WatermarkKeys = NO_KEYS) -> float:
    """Fraction of decoded bits that agree with ``shot_id``'s payload (under ``keys.current``)."""
    return float(np.mean(np.asarray(bits, dtype=bool) == payload_bits(shot_id, keys)))
