"""A white_background slot's shot keeps its background RGB 255 exactly under the watermark:
the mark lives in the product, the decoder lets pure-white blocks abstain, and the strict
rule (``white_tolerance: 0``) passes. A product too small to carry the mark is published
unmarked, saying so (XMP ``Watermark``, ``watermarks.method``), with the AI tag kept; its
renditions carry none either. A kept-white master's renditions keep the white too."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pipeline.brand.config import RenditionSpec, SlotRules
from pipeline.delivery.renditions import Master, make_rendition
from pipeline.gate import stage as g
from pipeline.gate import watermark as wm
from pipeline.gate.channel_rules import check_rules
from pipeline.gate.provenance import TRAINED_ALGORITHMIC_MEDIA, parse_xmp
from pipeline.types import KeepPixels
from tests.pipeline.test_clip_filter import FakeEncoder
from tests.pipeline.test_gate import prov, settings

STRICT = SlotRules(white_background=True)  # white_tolerance 0: RGB 255 exactly


def packshot(size: int = 768, radius: float = 0.3) -> Image.Image:
    """A shaded, textured product on pure white (no shadow: what a main image is)."""
    rng = np.random.default_rng(5)
    im = Image.new("RGB", (size, size), (255, 255, 255))
    base = np.linspace(1.1, 0.6, size)[:, None, None] * np.array([180, 90, 60])[None, None, :]
    noise = rng.normal(0, 8, (size, size, 1))
    obj = Image.fromarray((base + noise).clip(0, 250).astype("uint8"))
    mask = Image.new("L", (size, size), 0)
    r = radius * size
    c = size / 2
    ImageDraw.Draw(mask).ellipse((c - r, c - r, c + r, c + r), fill=255)
    im.paste(obj, (0, 0), mask)
    return im


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _xmp(data: bytes) -> dict[str, object]:
    im = Image.open(io.BytesIO(data))
    raw = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
    return parse_xmp(raw.encode() if isinstance(raw, str) else bytes(raw))


def test_white_is_kept_exact_and_the_mark_still_verifies(tmp_path: Path) -> None:
    image = packshot()
    white = wm.white_mask(image)
    gate = g.load_gate(settings(tmp_path), encoder=FakeEncoder())
    plain = gate.finalize(91, image, prov(91), "png")
    got = _pixels(plain.data)
    # Without keeping it, the mark lowers much of the white: the strict rule fails.
    assert (got[white] < 255).any(axis=1).mean() > 0.3
    assert check_rules(got, STRICT, None)[1]

    final = gate.finalize(91, image, prov(91), "png", KeepPixels(white=True))
    got = _pixels(final.data)
    assert final.verified and final.method == gate.watermark.label
    assert (got[white] == 255).all()  # every pure-white pixel is still RGB 255
    assert np.any(got[~white] != np.asarray(image)[~white])  # the mark is in the product
    assert check_rules(got, STRICT, None)[1] == []
    assert _xmp(final.data)["shotline:WatermarkKeep"] == "white"
    # verify/shotline's decoder reads it; JPEG (flat white stays 255 there) too.
    assert wm.decode(Image.open(io.BytesIO(final.data)), gate.watermark).shot_id == 91
    buf = io.BytesIO()
    Image.open(io.BytesIO(final.data)).save(buf, "JPEG", quality=85)
    assert wm.decode(Image.open(io.BytesIO(buf.getvalue())), gate.watermark).shot_id == 91


def test_a_product_too_small_for_the_mark_is_published_unmarked_and_says_so(
    tmp_path: Path,
) -> None:
    image = packshot(radius=0.03)  # a speck of product: too few blocks for 56 bits
    gate = g.load_gate(settings(tmp_path), encoder=FakeEncoder())
    final = gate.finalize(92, image, prov(92), "png", KeepPixels(white=True))
    assert not final.verified and final.method == wm.OMITTED_WHITE
    assert np.array_equal(_pixels(final.data), np.asarray(image))  # unmarked, not half-marked
    xmp = _xmp(final.data)
    assert xmp["shotline:Watermark"] == wm.OMITTED_WHITE
    assert xmp["Iptc4xmpExt:DigitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    # Its renditions carry no mark either, and say they are unverified rather than failing.
    master = Master.from_bytes(final.data)
    assert not master.marked
    spec = RenditionSpec(name="p", format="png", longest_side=600, aspect="4:5", fit="crop")
    r = make_rendition(master, "social", spec, 92)
    assert not r.watermark_verified and r.xmp_ai_tag


def test_renditions_of_a_kept_white_master_keep_the_white(tmp_path: Path) -> None:
    gate = g.load_gate(settings(tmp_path), encoder=FakeEncoder())
    final = gate.finalize(93, packshot(), prov(93), "png", KeepPixels(white=True))
    master = Master.from_bytes(final.data)
    assert master.keep_white and master.marked
    for spec in (
        # Re-embedded at a new size: the white restored again, the mark verified.
        RenditionSpec(name="p", format="png", longest_side=640, aspect="4:5", fit="crop"),
        RenditionSpec(name="j", format="jpeg", quality=90, longest_side=700),
    ):
        r = make_rendition(master, "shop", spec, 93)
        assert r.watermark_verified, spec
        if spec.format == "png":
            got = _pixels(r.data)
            assert (got == 255).all(axis=2).mean() > 0.5  # the background is still there
            assert check_rules(got, STRICT, None)[1] == []  # and RGB 255 exactly
