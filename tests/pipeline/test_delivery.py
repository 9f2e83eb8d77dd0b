"""Delivery stages without a database: channel config checks, alt text, URLs, the feed
writers and the temp-file-and-rename output."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pipeline.brand.config import BrandConfigError
from pipeline.brand.loader import find_brand, load_brand
from pipeline.delivery.alt_text import MAX_ALT_CHARS, compile_alt_text, render_alt_text
from pipeline.delivery.feeds import Exporter, FeedError
from pipeline.delivery.outfile import OutputPathError, atomic_text
from pipeline.delivery.urls import PublicUrlError, check_base_url, key_of, public_url
from tests.conftest import ROOT

ACME = find_brand(ROOT / "samples" / "brands", "acme")


def test_bad_channels_get_one_line_each_with_yaml_lines(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\n"
        "templates:\n"
        "  a: {prompt: x}\n"
        "channels:\n"
        "  shopify:\n"
        "    renditions:\n"
        "      - {name: main, format: gif, longest_side: 100}\n"
        "      - {name: x, width: 300}\n"
        '    alt_text: "{{ product.titel }}"\n'
        "  gmc:\n"
        "    renditions: [{name: f, aspect: '4-5'}]\n"
    )
    with pytest.raises(BrandConfigError) as err:
        load_brand(path)
    lines = err.value.lines()
    assert any(":7: channels.shopify.renditions[0].format" in ln for ln in lines)
    assert any(":7: channels.shopify.renditions[0].longest_side" in ln for ln in lines)
    assert any(":8: channels.shopify.renditions[1]: give both width" in ln for ln in lines)
    assert any(":9: channels.shopify.alt_text" in ln and "titel" in ln for ln in lines)
    assert any(":11: channels.gmc.renditions[0].aspect" in ln for ln in lines)


def test_slots_must_name_templates(tmp_path: Path) -> None:
    path = tmp_path / "b.yaml"
    path.write_text(
        "name: b\ntemplates:\n  a: {prompt: x}\nchannels:\n  gmc:\n"
        "    renditions: [{name: f}]\n    slots: {main: [a, nope]}\n"
    )
    with pytest.raises(BrandConfigError) as err:
        load_brand(path)
    assert err.value.problems == ["channels.gmc.slots.main[1]: unknown template 'nope' (known: a)"]


def test_a_brand_without_channels_keeps_its_digest_shape() -> None:
    plain = ACME.model_copy(update={"channels": None})
    assert "channels" not in plain.to_json()
    assert "channels" in ACME.to_json() and plain.digest() != ACME.digest()


def test_alt_text_is_data_bounded_and_one_line() -> None:
    tmpl = compile_alt_text("{{ product.title }} – {{ brand.display_name }}")
    ctx = {"product": {"title": "{{ 7*7 }}\nMug"}, "brand": {"display_name": "ACME"}}
    assert render_alt_text(tmpl, ctx) == "{{ 7*7 }} Mug – ACME"
    long = render_alt_text(tmpl, {"product": {"title": "word " * 300}, "brand": ctx["brand"]})
    assert len(long) <= MAX_ALT_CHARS and long.endswith("word")


def test_urls_are_encoded_and_stable() -> None:
    base = check_base_url("https://cdn.example.com/a b")
    assert base == "https://cdn.example.com/a%20b/"
    url = public_url(base, "acme/SKU, 1/t/ab.jpg")
    assert url == "https://cdn.example.com/a%20b/acme/SKU%2C%201/t/ab.jpg"
    assert key_of(base, url) == "acme/SKU, 1/t/ab.jpg"
    for bad in (None, "", "cdn.example.com/x", "ftp://h/x", "https://h/x?sig=1"):
        with pytest.raises(PublicUrlError):
            check_base_url(bad)


@dataclass
class Row:
    product_id: int
    handle: str
    template: str
    key: str
    variant: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)


def _rows() -> list[Row]:
    data = {
        "title": "Mug",
        "options": ["Color"],
        "images": ["own.jpg"],
        "variants": [{"sku": "M-R", "options": {"Color": "Red"}}],
    }
    v = {"options": {"Color": "Red"}, "skus": ["M-R"]}
    return [
        Row(1, "mug", t, f"acme/M-R/{t}/{i}.jpg", v, data)
        for i, t in enumerate(
            ["flat_lay", "hero_white", "lifestyle_kitchen", "packshot_white", "packshot_scene"]
        )
    ]


def test_shopify_rows_positions_and_variant_image() -> None:
    assert ACME.channels is not None
    ex = Exporter(ACME, "shopify", ACME.channels["shopify"], "https://c/")
    out = io.StringIO()
    stats = ex.shopify(_rows(), out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    images = [r for r in rows if r["Image Src"]]
    assert [r["Image Position"] for r in images] == ["2", "3", "4", "5", "6"]  # after own
    assert images[0]["Image Alt Text"] == "Mug (Red), ACME Home"
    variant = [r for r in rows if r["Variant Image"]]
    assert len(variant) == 1 and variant[0]["Variant SKU"] == "M-R"
    assert variant[0]["Option1 Name"] == "Color" and variant[0]["Option1 Value"] == "Red"
    assert variant[0]["Variant Image"].endswith("/packshot_white/3.jpg")
    assert stats.images == 5 and stats.items == 1


def test_gmc_keeps_main_empty_by_default_and_caps_additional() -> None:
    assert ACME.channels is not None
    ex = Exporter(ACME, "gmc", ACME.channels["gmc"], "https://c/")
    rows = _rows() + [Row(1, "mug", "hero_white", f"k{i}", _rows()[0].variant) for i in range(12)]
    items = list(ex.gmc_items(rows))
    assert len(items) == 1
    oid, main, more, life = items[0]
    assert oid == "M-R" and main == "" and life.endswith("lifestyle_kitchen/2.jpg")
    assert len(more.split(",")) == 10


def test_alt_text_failure_names_the_product() -> None:
    assert ACME.channels is not None
    spec = ACME.channels["shopify"].model_copy(update={"alt_text": "{{ variant.Size }}"})
    ex = Exporter(ACME, "shopify", spec, "https://c/")
    with pytest.raises(FeedError, match="product 'mug': alt_text"):
        ex.shopify(_rows(), io.StringIO())


def test_atomic_output_keeps_the_old_file_on_error(tmp_path: Path) -> None:
    out = tmp_path / "f.csv"
    out.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_text(out) as fh:
        fh.write("half")
        raise RuntimeError("boom")
    assert out.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["f.csv"]
    with atomic_text(out) as fh:
        fh.write("new\n")
    assert out.read_text() == "new\n"
    with pytest.raises(OutputPathError, match="is a folder"), atomic_text(tmp_path):
        pass
    with pytest.raises(OutputPathError, match="does not exist"), atomic_text(tmp_path / "x" / "f"):
        pass


def _master(side: int, shot_id: int = 77) -> bytes:
    import numpy as np
    from PIL import Image

    from pipeline.gate import watermark as wm
    from pipeline.gate.provenance import build_xmp, encode_image
    from pipeline.types import ProvenanceInfo

    rng = np.random.default_rng(1)
    img = Image.fromarray((rng.random((side, side, 3)) * 80 + 120).astype("uint8"))
    marked = wm.embed(img, shot_id, wm.WatermarkConfig()) if side >= 256 else None
    info = ProvenanceInfo(shot_id, "tiny", None)
    xmp = build_xmp(info, {"Watermark": marked.method if marked else "none"})
    return encode_image(marked.image if marked else img, "png", xmp)


def test_renditions_verify_cap_bytes_and_follow_small_masters() -> None:
    from pipeline.brand.config import RenditionSpec
    from pipeline.delivery.renditions import RenditionError, make_renditions

    data = _master(320)
    specs = [
        ("a", RenditionSpec(name="j", format="jpeg", quality=95, max_bytes=40_000)),
        ("b", RenditionSpec(name="w", format="webp", aspect="1:2", fit="pad")),
    ]
    jpeg, webp = make_renditions(data, specs, 77)
    assert jpeg.watermark_verified and jpeg.xmp_ai_tag and jpeg.icc_srgb
    assert len(jpeg.data) <= 40_000 and jpeg.quality is not None and jpeg.quality < 95
    assert (webp.width, webp.height) == (320, 640) and webp.watermark_verified
    with pytest.raises(RenditionError, match="over max_bytes"):
        make_renditions(data, [("a", RenditionSpec(name="p", format="png", max_bytes=2000))], 77)
    # A master too small to carry a watermark (the tiny preset's 64 px): unverified, kept.
    (small,) = make_renditions(_master(64), specs[:1], 77)
    assert not small.watermark_verified and small.bit_accuracy is None and small.xmp_ai_tag


def test_a_re_embedded_rendition_mark_is_keyed_like_its_master() -> None:
    """With a deployment key, a rendition whose pixels changed gets a mark under the same key
    (an unkeyed one would read as forged on a keyed shot), and it verifies under that key."""
    import numpy as np
    from PIL import Image

    from pipeline.brand.config import RenditionSpec
    from pipeline.delivery.renditions import make_renditions
    from pipeline.gate import watermark as wm
    from pipeline.gate.provenance import build_xmp, encode_image
    from pipeline.types import ProvenanceInfo

    keys = wm.WatermarkKeys.parse("1:" + "k" * 24, [], False)
    rng = np.random.default_rng(2)
    img = Image.fromarray((rng.random((320, 320, 3)) * 80 + 120).astype("uint8"))
    marked = wm.embed(img, 91, wm.WatermarkConfig(), keys)
    xmp = build_xmp(ProvenanceInfo(91, "tiny", None), {"Watermark": marked.method})
    data = encode_image(marked.image, "png", xmp)
    spec = RenditionSpec(name="w", format="webp", aspect="1:2", fit="pad")
    (webp,) = make_renditions(data, [("b", spec)], 91, keys)
    assert webp.watermark_verified and webp.bit_accuracy == 1.0
    decoded = wm.decode(Image.open(io.BytesIO(webp.data)), wm.WatermarkConfig(), keys=keys)
    assert decoded.shot_id == 91
    unkeyed = wm.decode(Image.open(io.BytesIO(webp.data)), wm.WatermarkConfig())
    assert unkeyed.shot_id is None  # no legacy (forgeable) code in it


def test_png_rendition_chunks_are_valid_and_carry_profile_and_xmp() -> None:
    """The PNG rendition is libpng's encoding with iCCP and iTXt put after IHDR: both
    decoders accept every chunk CRC, the pixels are the rendition's, and the sRGB profile and
    the XMP AI tag read back."""
    import cv2
    import numpy as np
    from PIL import Image

    from pipeline.brand.config import RenditionSpec
    from pipeline.delivery.renditions import Master, make_rendition, srgb_profile
    from pipeline.gate.provenance import TRAINED_ALGORITHMIC_MEDIA, parse_xmp

    master = Master.from_bytes(_master(320))
    spec = RenditionSpec(name="p", format="png", aspect="4:5", fit="crop")
    r = make_rendition(master, "social", spec, 77)
    assert r.watermark_verified and r.icc_srgb and r.xmp_ai_tag
    Image.open(io.BytesIO(r.data)).verify()  # every chunk's CRC
    im = Image.open(io.BytesIO(r.data))
    assert im.info["icc_profile"] == srgb_profile()
    xmp = parse_xmp(im.info["XML:com.adobe.xmp"].encode())
    assert xmp["Iptc4xmpExt:DigitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    bgr = cv2.imdecode(np.frombuffer(r.data, np.uint8), cv2.IMREAD_COLOR)
    assert bgr is not None and np.array_equal(bgr[:, :, ::-1], np.asarray(im.convert("RGB")))
    assert (r.width, r.height) == im.size
