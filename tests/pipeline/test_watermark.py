"""Invisible watermark: payload check code, round trips, attacks, compatibility with imwatermark."""

from __future__ import annotations

import dataclasses
import io

import cv2
import numpy as np
import pytest
from imwatermark import WatermarkDecoder
from PIL import Image, ImageDraw

from pipeline.gate import watermark as wm

SIZE = 512  # above imwatermark's 256x256 minimum, small enough for a fast suite
CONFIG = wm.WatermarkConfig()  # production default: dwtDctSvd on luma, strength 1


def packshot(seed: int = 0, size: int = SIZE) -> Image.Image:
    """Pure white background with one shaded object: the hard case for watermarks."""
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", (size, size), (255, 255, 255))
    color = rng.integers(30, 220, 3)
    grad = np.linspace(1.1, 0.7, size)[:, None, None] * color[None, None, :]
    obj = Image.fromarray(np.broadcast_to(grad, (size, size, 3)).clip(0, 255).astype("uint8"))
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).ellipse((size * 0.3, size * 0.25, size * 0.7, size * 0.75), fill=255)
    im.paste(obj, (0, 0), mask)
    return im


def textured(seed: int = 0, size: int = SIZE) -> Image.Image:
    rng = np.random.default_rng(seed)
    low = rng.normal(128, 50, (10, 10, 3)).clip(0, 255).astype("uint8")
    base = np.asarray(Image.fromarray(low).resize((size, size), Image.BICUBIC), dtype=np.float32)
    noise = rng.normal(0, 6, (size, size, 1))
    return Image.fromarray((base + noise).clip(0, 255).astype("uint8"))


def reencode(im: Image.Image, fmt: str, **kw: object) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def psnr(a: Image.Image, b: Image.Image) -> float:
    return float(cv2.PSNR(np.asarray(a), np.asarray(b)))


def test_payload_round_trip_and_check_code() -> None:
    for shot_id in (0, 1, 123_456, 2**32 - 1):
        payload = wm.make_payload(shot_id)
        assert len(payload) * 8 == wm.PAYLOAD_BITS
        assert wm.parse_bits(wm.payload_bits(shot_id)) == shot_id
    bits = wm.payload_bits(77)
    for i in (0, 31, 32, 55):  # one flipped bit in the id or in the check code
        flipped = bits.copy()
        flipped[i] = ~flipped[i]
        assert wm.parse_bits(flipped) is None
    # What a blank image decodes to must not pass as shot 0 (or anything).
    assert wm.parse_bits(np.zeros(wm.PAYLOAD_BITS, bool)) is None
    assert wm.parse_bits(np.ones(wm.PAYLOAD_BITS, bool)) is None
    with pytest.raises(wm.WatermarkError):
        wm.make_payload(2**32)


@pytest.mark.parametrize("make", [packshot, textured], ids=["white-packshot", "textured"])
def test_round_trip_survives_png_jpeg_and_resize(make) -> None:  # type: ignore[no-untyped-def]
    original = make(3)
    marked = wm.embed(original, 4242, CONFIG)
    assert marked.embedded and marked.method == "dwtDctSvd-y-x1"
    assert marked.payload == wm.make_payload(4242).hex()
    assert psnr(original, marked.image) > 38  # invisible, also on the flat white background

    for attacked in (
        reencode(marked.image, "PNG"),
        reencode(marked.image, "JPEG", quality=85),  # Pillow default 4:2:0 subsampling
        reencode(marked.image, "JPEG", quality=75),
        marked.image.resize((SIZE * 3 // 4, SIZE * 3 // 4), Image.LANCZOS),
        marked.image.resize((SIZE // 2, SIZE // 2), Image.LANCZOS),
    ):
        res = wm.decode(attacked, CONFIG)
        assert res.verified and res.shot_id == 4242, attacked.size
        assert wm.bit_accuracy(res.bits, 4242) == 1.0


def test_resized_copy_is_found_by_rescaling() -> None:
    marked = wm.embed(textured(5), 99, CONFIG).image
    small = marked.resize((SIZE * 3 // 4, SIZE * 3 // 4), Image.LANCZOS)
    res = wm.decode(small, CONFIG)
    assert res.verified and res.scale == pytest.approx(4 / 3)
    assert not wm.decode(small, CONFIG, rescale=()).verified


def test_unwatermarked_and_random_images_fail_verification() -> None:
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)) for _ in range(8)
    ]
    images += [packshot(i) for i in range(3)] + [textured(i) for i in range(3)]
    images.append(Image.new("RGB", (SIZE, SIZE), (255, 255, 255)))
    for im in images:
        res = wm.decode(im, CONFIG)
        assert not res.verified and res.shot_id is None


def test_other_config_does_not_verify() -> None:
    marked = wm.embed(textured(1), 5, CONFIG).image
    assert not wm.decode(marked, wm.WatermarkConfig(strength=1.5), rescale=()).verified


def test_bitstream_is_imwatermark_compatible_both_ways() -> None:
    """Our vectorised dwtDctSvd writes what stock imwatermark reads, and reads what it writes."""
    im = textured(2)
    fast = wm.embed(im, 31337, CONFIG).image
    bgr = np.asarray(fast, dtype=np.float32)[:, :, ::-1].copy()
    stock = WatermarkDecoder("bytes", wm.PAYLOAD_BITS).decode(bgr, "dwtDctSvd", scales=[36, 0, 0])
    assert stock == wm.make_payload(31337)

    package = dataclasses.replace(CONFIG, engine="imwatermark")
    slow = wm.embed(im, 31337, package).image
    assert wm.decode(slow, CONFIG, rescale=()).shot_id == 31337
    # Same algorithm: the two images differ by at most one rounding level.
    diff = np.abs(np.asarray(fast, dtype=int) - np.asarray(slow, dtype=int))
    assert diff.max() <= 1


def test_package_path_keeps_image_detail() -> None:
    """imwatermark swaps the horizontal/vertical detail bands; we restore them."""
    im = textured(4)
    for config in (
        dataclasses.replace(CONFIG, engine="imwatermark"),
        wm.WatermarkConfig(method="dwtDct", channel="y"),
    ):
        marked = wm.embed(im, 8, config).image
        assert psnr(im, marked) > 38, config.label


def test_chroma_default_fails_on_white_background() -> None:
    """Why we embed in luma: imwatermark's U-channel default loses the payload on white."""
    im = packshot(7)
    u_config = wm.WatermarkConfig(channel="u")
    assert not wm.decode(wm.embed(im, 11, u_config).image, u_config, rescale=()).verified
    assert wm.decode(wm.embed(im, 11, CONFIG).image, CONFIG, rescale=()).verified


def test_small_images_are_not_watermarked() -> None:
    res = wm.embed(Image.new("RGB", (64, 64), (10, 20, 30)), 1, CONFIG)
    assert not res.embedded and res.method == "none"
    assert res.image.size == (64, 64)
    assert not wm.decode(res.image, CONFIG).verified


def test_rgba_is_flattened_on_white() -> None:
    rgba = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).rectangle((100, 100, 400, 400), fill=(200, 30, 30, 255))
    marked = wm.embed(rgba, 17, CONFIG).image
    assert marked.mode == "RGB" and marked.getpixel((5, 5))[0] >= 250
    assert wm.decode(marked, CONFIG).shot_id == 17


def test_config_validation_and_labels() -> None:
    with pytest.raises(wm.WatermarkError):
        wm.WatermarkConfig(method="rivaGan")
    with pytest.raises(wm.WatermarkError):
        wm.WatermarkConfig(strength=0)
    with pytest.raises(wm.WatermarkError, match="too long"):
        wm.WatermarkConfig(strength=1.125, headroom=16)
    for label in ("dwtDctSvd-y-x1", "dwtDct-u-x1", "dwtDct-y-x1.5-h8", "dwtDctSvd-y-x1-imw"):
        cfg = wm.WatermarkConfig.from_label(label)
        assert cfg is not None and cfg.label == label
    assert wm.WatermarkConfig.from_label("rivaGan-y-x1") is None
    assert wm.WatermarkConfig.from_label("dwtDctSvd-y-x99") is None


def test_highlight_compression_maps_only_values_above_the_knee() -> None:
    rng = np.random.default_rng(3)
    bgr = rng.uniform(0, 255, (64, 48, 3)).astype(np.float32)
    bgr[0, :4, 0] = [191.9, 192.0, 192.1, 255.0]
    out = wm._compress_highlights(bgr, headroom=16)
    assert out.dtype == np.float32 and out.shape == bgr.shape
    # The reference: map just the values above the knee, in the same float32 arithmetic.
    ref = bgr.copy()
    hi = ref > 192.0
    ref[hi] = 192.0 + (ref[hi] - 192.0) * (239.0 - 192.0) / (255.0 - 192.0)
    assert np.array_equal(out, ref)
    assert out[0, 3, 0] == np.float32(239.0) and out[0, 1, 0] == np.float32(192.0)


def test_fast_singular_values_match_lapack() -> None:
    """Power iteration (with eigh where it has not converged) gives LAPACK's largest singular
    value and a rank-1 term of the same sign-free product, on noise (slow to converge),
    smooth blocks and zero blocks alike."""
    rng = np.random.default_rng(7)
    noise = rng.uniform(0, 510, (3000, 4, 4))
    smooth = np.cumsum(rng.normal(0, 3, (3000, 4, 4)), axis=2) + 300
    zeros = np.zeros((10, 4, 4))
    blocks = np.concatenate([noise, smooth, zeros])
    s0, u0, v0 = wm._top_singular(blocks)
    u, s, vt = np.linalg.svd(blocks)
    assert np.abs(s0 - s[:, 0]).max() < 1e-3
    ours = u0[:, :, None] * v0[:, None, :]
    lapack = u[:, :, 0, None] * vt[:, 0, None, :]
    live = s[:, 0] > 1e-9
    assert np.abs(ours - lapack)[live].max() < 1e-4
    # A zero block gets the DC basis vector, as LAPACK's SVD of its DCT does.
    assert np.allclose(ours[~live], 0.25)


def test_decode_file_reads_the_luma_plane_of_each_format() -> None:
    """The renditions' verifier: the codec's own luma, no rescaling; the payload survives
    JPEG, WebP and PNG, an unmarked file does not verify, and a package-engine config is
    handed back to the caller (None)."""
    marked = wm.embed(textured(3), 4242, CONFIG).image
    for fmt, kw in (("JPEG", {"quality": 90}), ("WEBP", {"quality": 90}), ("PNG", {})):
        buf = io.BytesIO()
        marked.save(buf, fmt, **kw)
        found = wm.decode_file(buf.getvalue(), CONFIG)
        assert found is not None and found.shot_id == 4242, fmt
    plain = io.BytesIO()
    textured(3).save(plain, "PNG")
    found = wm.decode_file(plain.getvalue(), CONFIG)
    assert found is not None and not found.verified
    assert (
        wm.decode_file(plain.getvalue(), dataclasses.replace(CONFIG, engine="imwatermark")) is None
    )
    with pytest.raises(wm.WatermarkError):
        wm.decode_file(b"not an image", CONFIG)
