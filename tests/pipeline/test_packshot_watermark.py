"""The watermark leaves a packshot's product alone: the product core of the published file is
byte-identical to the placed source, the mark still decodes, and a flat-colour product (where
a whole-image watermark costs the core about 40 dB of PSNR) passes its own fidelity check."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipeline.gate import stage as g
from pipeline.gate import watermark as wm
from pipeline.packshot.cutout import cut_out
from pipeline.packshot.placement import PlacementSpec, place
from pipeline.packshot.stage import composite_checked, fidelity_scores
from pipeline.types import KeepPixels
from tests.pipeline.test_clip_filter import FakeEncoder
from tests.pipeline.test_gate import prov, settings


def flat_box(size: int = 320) -> Image.Image:
    """A blue box with an orange stripe on a transparent background (flat packaging)."""
    im = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(im)
    draw.rectangle((40, 60, size - 40, size - 40), fill=(30, 70, 200, 255))
    draw.rectangle((40, 150, size - 40, 185), fill=(250, 140, 20, 255))
    return im


def placed_scene(size: int = 512) -> tuple[Image.Image, KeepPixels]:
    placed = place(cut_out(flat_box()), PlacementSpec(scale=0.7), size, size)
    scene = np.random.default_rng(3).integers(0, 256, (size, size, 3), dtype=np.uint8)
    final, exact = composite_checked(Image.fromarray(scene, "RGB"), placed)
    assert exact.ok
    return final, KeepPixels(placed.rgb, placed.alpha == 255)


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_the_product_core_survives_the_watermark(tmp_path: Path, fmt: str) -> None:
    image, keep = placed_scene()
    gate = g.load_gate(settings(tmp_path), encoder=FakeEncoder())
    final = gate.finalize(77, image, prov(77), fmt, keep)
    assert final.verified and final.bit_accuracy == 1.0  # the scene alone carries the mark
    got = np.asarray(Image.open(io.BytesIO(final.data)).convert("RGB"))
    if fmt == "png":
        assert np.array_equal(got[keep.mask], keep.rgb[keep.mask])
    scene = ~keep.mask
    assert np.any(got[scene] != np.asarray(image)[scene])  # the mark is in the scene
    assert wm.decode(Image.open(io.BytesIO(final.data)), gate.watermark).shot_id == 77


def test_a_flat_product_passes_its_own_fidelity_check(tmp_path: Path) -> None:
    image, keep = placed_scene()
    gate = g.load_gate(settings(tmp_path), encoder=FakeEncoder())
    alpha = np.where(keep.mask, 255, 0).astype(np.uint8)
    whole = gate.finalize(78, image, prov(78), "png")  # the mark over the product too
    before = np.asarray(Image.open(io.BytesIO(whole.data)).convert("RGB"))
    assert np.any(before[keep.mask] != keep.rgb[keep.mask])  # what the issue saw
    final = gate.finalize(78, image, prov(78), "png", keep)
    scores, reasons = fidelity_scores(image, final.data, keep.rgb, alpha)
    assert reasons == []
    by_name = {s.name: s for s in scores}
    assert by_name["product_pixels_changed_final"].score == 0.0
    assert not by_name["product_psnr_db"].triggered


def test_pixels_to_keep_must_match_the_image(tmp_path: Path) -> None:
    image, keep = placed_scene()
    gate = g.load_gate(settings(tmp_path), encoder=FakeEncoder())
    small = KeepPixels(keep.rgb[:100], keep.mask[:100])
    with pytest.raises(g.GateError, match="pixels to keep"):
        gate.finalize(79, image, prov(79), "png", small)


def test_a_one_to_one_placement_copies_the_product() -> None:
    """A product whose box equals the placement box is copied, not resampled: every core
    pixel on the canvas is the source's own (a textured label shows any blur). The source has
    an opaque white background, so its cutout's alpha is feathered: the box must come from
    the hard mask, or the product is resampled by ~1.005."""
    rng = np.random.default_rng(5)
    src = np.full((320, 320, 3), 255, np.uint8)
    src[40:280, 60:260] = rng.integers(0, 200, (240, 200, 3), dtype=np.uint8)
    cutout = cut_out(Image.fromarray(src, "RGB"))
    hy, hx = np.nonzero(cutout.mask)
    hard = (int(hx.min()), int(hy.min()), int(hx.max()) + 1, int(hy.max()) + 1)
    bw, bh = hard[2] - hard[0], hard[3] - hard[1]
    spec = PlacementSpec(scale=max(bw, bh) / 400, margin=0.01)
    placed = place(cutout, spec, 400, 400)
    py, px = np.nonzero(placed.alpha >= 128)
    x0, y0 = int(px.min()), int(py.min())
    assert (int(px.max()) + 1 - x0, int(py.max()) + 1 - y0) == (bw, bh)
    ys, xs = np.nonzero(cutout.alpha == 255)
    got = placed.rgb[ys - hard[1] + y0, xs - hard[0] + x0]
    assert np.array_equal(got, src[ys, xs])
