"""Placement, composite and fidelity on the sample packshots (no model: a noise scene)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.packshot.composite import composite
from pipeline.packshot.cutout import cut_out
from pipeline.packshot.fidelity import check_exact, check_psnr
from pipeline.packshot.placement import PlacementSpec, place

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "packshots"


@pytest.fixture(scope="module")
def mug_cut():
    with Image.open(SAMPLES / "mug.png") as im:
        return cut_out(im.convert("RGB"))


def _noise(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("shadow", ["none", "contact", "drop"])
@pytest.mark.parametrize("anchor", ["center", "bottom"])
def test_composite_keeps_the_product_exactly(mug_cut, shadow: str, anchor: str) -> None:
    placed = place(mug_cut, PlacementSpec(anchor=anchor, shadow=shadow), 192, 128)  # type: ignore[arg-type]
    out = composite(_noise(192, 128), placed)
    assert out.size == (192, 128)
    fid = check_exact(out, placed.rgb, placed.core)
    assert fid.ok, fid.reason
    assert fid.pixels > 1000
    # Outside the product the scene is the generated one, not the source.
    bg = placed.alpha == 0
    assert not np.array_equal(np.asarray(out)[bg], placed.rgb[bg])


def test_placement_geometry(mug_cut) -> None:
    spec = PlacementSpec(scale=0.5, anchor="bottom", floor_margin=0.1, seam_px=3)
    placed = place(mug_cut, spec, 200, 200)
    x0, y0, x1, y1 = placed.box
    assert max(x1 - x0, y1 - y0) == 100  # scale is the bbox's longer side over the canvas
    assert y1 == 200 - 20  # floor margin
    assert abs((x0 + x1) / 2 - 100) <= 1
    # The inpaint mask keeps only the product's core, eroded by the seam band.
    keep = placed.inpaint_mask == 0
    assert keep.any() and (keep <= placed.core).all() and keep.sum() < placed.core.sum()
    assert (placed.inpaint_mask[placed.alpha == 0] == 255).all()
    assert placed.lineage()["box"] == [x0, y0, x1, y1]


def test_shadows_darken_only_outside_the_product(mug_cut) -> None:
    none = place(mug_cut, PlacementSpec(anchor="bottom"), 128, 128)
    contact = place(mug_cut, PlacementSpec(anchor="bottom", shadow="contact"), 128, 128)
    assert not none.shadow.any()
    below = contact.shadow[contact.box[3] - 2 :, :]
    assert below.max() > 20
    white = np.full((128, 128, 3), 255, np.uint8)
    out = np.asarray(composite(Image.fromarray(white), contact))
    assert out[contact.alpha == 0].min() < 240  # the shadow shows on a white scene
    assert np.array_equal(out[contact.core], contact.rgb[contact.core])


def test_fidelity_rejects_a_tampered_product(mug_cut) -> None:
    placed = place(mug_cut, PlacementSpec(), 128, 128)
    out = np.asarray(composite(_noise(128, 128), placed)).copy()
    ys, xs = np.nonzero(placed.core)
    out[ys[:5], xs[:5]] ^= 1  # five product pixels off by one level
    fid = check_exact(out, placed.rgb, placed.core)
    assert not fid.ok and fid.mismatched == 5
    assert fid.reason is not None and "5 of" in fid.reason and "altered" in fid.reason


def test_psnr_check_after_a_watermark_like_change(mug_cut) -> None:
    placed = place(mug_cut, PlacementSpec(), 128, 128)
    out = np.asarray(composite(_noise(128, 128), placed)).astype(np.int16)
    rng = np.random.default_rng(1)
    light = np.clip(out + rng.integers(-1, 2, out.shape), 0, 255).astype(np.uint8)
    ok = check_psnr(light, placed.rgb, placed.core)
    assert ok.ok and ok.psnr_db is not None and ok.psnr_db > 45
    heavy = np.clip(out + rng.integers(-30, 31, out.shape), 0, 255).astype(np.uint8)
    bad = check_psnr(heavy, placed.rgb, placed.core)
    assert not bad.ok and bad.reason is not None and "below 40 dB" in bad.reason
    assert check_psnr(out.astype(np.uint8), placed.rgb, placed.core).to_json()["psnr_db"] is None


@pytest.mark.parametrize("name", ["mug", "bottle", "pillow", "ball"])
def test_real_watermark_keeps_psnr_inside_the_product(name: str) -> None:
    from pipeline.gate.watermark import WatermarkConfig, embed

    with Image.open(SAMPLES / f"{name}.png") as im:
        cut = cut_out(im.copy())
    # 256 px: the smallest canvas the invisible watermark embeds in.
    placed = place(cut, PlacementSpec(anchor="bottom", shadow="contact"), 256, 256)
    final = composite(_noise(256, 256), placed)
    marked = embed(final, 42, WatermarkConfig())
    assert marked.embedded
    # The watermark changes product pixels on purpose (so the exact check no longer holds)...
    assert not check_exact(marked.image, placed.rgb, placed.core).ok
    # ...but only slightly.
    fid = check_psnr(marked.image, placed.rgb, placed.core)
    assert fid.ok, fid.reason
