"""Output size apart from the model size: the template key, the second ("hires") pass on the
tiny preset (random weights: the scenes are noise), and a packshot's product placed at the
output size from its source.

The sharpness check ("a 1600-px source placed into a 2048² output keeps the product at least
as sharp as a single Lanczos resize of the source") runs at the packshot-stage level: the
tiny model at 2048² is too slow for the suite, and the model never touches the product's core
(the end-to-end tiny run is tests/tasks/test_hires_line.py).
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from pydantic import ValidationError

from pipeline.brand.config import BrandConfig
from pipeline.gate import stage as g
from pipeline.generate.generator import DiffusersGenerator, load_generator
from pipeline.generate.inpaint import InpaintShot
from pipeline.packshot.cutout import cut_out
from pipeline.packshot.fidelity import psnr
from pipeline.packshot.placement import PlacementSpec, downscaled, place
from pipeline.packshot.stage import composite_checked, placed_for_output
from pipeline.settings import Settings
from pipeline.types import HiresSpec, KeepPixels, ShotParams
from tests.pipeline.test_gate import prov, settings

torch.set_num_threads(1)  # 2 shared cores

NATIVE = 64


def _brand(template: dict[str, Any], presets: dict[str, Any] | None = None) -> BrandConfig:
    data: dict[str, Any] = {
        "name": "acme",
        "templates": {"t": {"prompt": "a mug", "preset": "tiny_fast", **template}},
    }
    if presets:
        data["presets"] = presets
    return BrandConfig.model_validate(data)


# --- the template key -----------------------------------------------------------------


def test_output_resolves_to_a_recorded_hires_spec() -> None:
    res = _brand({"output": {"long_side": 128}}).resolve_template("t")
    assert (res.width, res.height) == (NATIVE, NATIVE)  # the model still runs at its size
    assert res.output == {
        "width": 128,
        "height": 128,
        "strength": 0.35,
        "steps": 20,
        "upscale": "lanczos",
    }
    assert res.output_size == (128, 128)
    portrait = _brand({"width": 64, "height": 96, "output": {"long_side": 1000}})
    assert portrait.resolve_template("t").output_size == (664, 1000)  # multiples of 8
    exact = _brand({"output": {"width": 256, "height": 128, "upscale": "latent", "steps": 6}})
    assert exact.resolve_template("t").hires == HiresSpec(256, 128, 0.35, 6, "latent")


def test_a_preset_can_name_the_output_and_the_template_overrides_it() -> None:
    presets = {"big": {"width": 64, "height": 64, "output": {"width": 192, "height": 192}}}
    assert _brand({"preset": "big"}, presets).resolve_template("t").output_size == (192, 192)
    over = _brand({"preset": "big", "output": {"long_side": 128}}, presets)
    assert over.resolve_template("t").output_size == (128, 128)


def test_no_output_keeps_the_digests_of_before() -> None:
    plain = _brand({})
    res = plain.resolve_template("t")
    assert res.output is None and res.hires is None and res.output_size == (NATIVE, NATIVE)
    assert "output" not in res.definition()
    assert "output" not in plain.to_json()["templates"]["t"]
    hires = _brand({"output": {"long_side": 128}})
    assert hires.template_digest("t") != plain.template_digest("t")
    assert hires.digest() != plain.digest()


@pytest.mark.parametrize(
    "output",
    [{"width": 128}, {"width": 128, "height": 128, "long_side": 256}, {}, {"long_side": 32}],
)
def test_an_output_without_one_size_is_refused(output: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _brand({"output": output})


def test_output_problems_name_the_template() -> None:
    small = _brand({"width": 256, "height": 256, "output": {"width": 128, "height": 128}})
    assert any("smaller than the template's native size" in m for _, m in small.problems())
    pack = _brand({"source": "packshot", "output": {"long_side": 128, "upscale": "latent"}})
    locs = [loc for loc, _ in pack.problems()]
    assert ("templates", "t", "output", "upscale") in locs
    # Slot rules judge the published image: the output size, not the model's.
    rules = {"min_long_side": 1000, "aspect": "1:1"}
    assert _brand({"rules": rules}).problems()  # 64 px: every shot would fail
    assert not _brand({"rules": rules, "output": {"long_side": 1024}}).problems()


# --- the second pass on the tiny preset ---------------------------------------------------


@pytest.fixture(scope="module")
def generator(cpu_settings: Settings) -> DiffusersGenerator:
    return load_generator(cpu_settings, "tiny")


def _shot(i: int) -> ShotParams:
    return ShotParams(
        i, f"a mug on a table {i}", "blurry", 900 + i, "tiny", 64, 64, 2, 5.0, "euler"
    )


def _sha(gen: DiffusersGenerator, shots: list[ShotParams]) -> dict[int, str | None]:
    return {o.shot_id: o.sha256 for o in gen.generate(shots)}


def test_a_text_shot_ends_at_the_output_size(generator: DiffusersGenerator) -> None:
    native = _shot(1)
    before = generator.generate([native])[0]
    assert before.image is not None and before.image.size == (NATIVE, NATIVE)
    outs = {}
    for up in ("lanczos", "latent"):
        shot = replace(native, hires=HiresSpec(128, 128, 0.5, 4, up))  # type: ignore[arg-type]
        out = generator.generate([shot])[0]
        assert out.error is None and out.image is not None
        assert out.image.size == (128, 128)
        assert "hires" in out.timings
        outs[up] = np.asarray(out.image)
    # The pass moved the upscaled scene: not just a Lanczos resize of the native image.
    plain_up = np.asarray(before.image.resize((128, 128), Image.Resampling.LANCZOS))
    assert not np.array_equal(outs["lanczos"], plain_up)
    assert not np.array_equal(outs["lanczos"], outs["latent"])
    # The VAE is back as it was (untiled): a native shot is made exactly as before.
    assert not generator.pipe.vae.use_tiling
    assert generator.generate([native])[0].sha256 == before.sha256


def test_a_hires_shot_is_the_same_alone_and_in_a_mixed_batch(
    generator: DiffusersGenerator,
) -> None:
    spec = HiresSpec(256, 256, 0.35, 3, "lanczos")  # 32x32 latents: the VAE works in tiles
    hires = [replace(_shot(i), hires=spec) for i in (10, 11)]
    native = _shot(12)
    together = _sha(generator, [hires[0], native, hires[1]])
    assert _sha(generator, [hires[1]])[11] == together[11]
    assert _sha(generator, [hires[0]])[10] == together[10]
    assert _sha(generator, [native])[12] == together[12]
    out = generator.generate([hires[0]])[0]
    assert out.image is not None and out.image.size == (256, 256)


def test_a_packshot_hires_pass_keeps_the_product_placed_at_the_output_size(
    generator: DiffusersGenerator,
) -> None:
    src = Image.new("RGBA", (300, 300), (0, 0, 0, 0))
    draw = ImageDraw.Draw(src)
    draw.rectangle((40, 40, 260, 260), fill=(30, 70, 200, 255))
    for x in range(50, 250, 6):  # fine stripes: detail a 64-px canvas would lose
        draw.line((x, 45, x, 255), fill=(250, 140, 20, 255), width=2)
    full = place(cut_out(src), PlacementSpec(scale=0.7, shadow="contact"), 128, 128)
    canvas = downscaled(full, NATIVE, NATIVE)
    params = replace(_shot(20), hires=HiresSpec(128, 128, 0.4, 4, "lanczos"))
    res = generator.inpainter().generate([InpaintShot(params, canvas, full)])[0]
    assert res.output.error is None and res.output.image is not None
    assert res.output.image.size == (128, 128)
    assert res.fidelity is not None and res.fidelity.ok and res.fidelity.pixels > 0
    final = np.asarray(res.output.image)
    assert np.array_equal(final[full.core], full.rgb[full.core])
    # A shot whose output placement does not match its hires size is refused, alone.
    wrong = generator.inpainter().generate([InpaintShot(params, canvas, canvas)])[0]
    assert wrong.output.error is not None and "output" in wrong.output.error


# --- the product at source resolution ------------------------------------------------------


def _detailed_source(side: int = 1600) -> Image.Image:
    """A product with fine detail (noise texture, thin lines, text-like marks) on white."""
    rng = np.random.default_rng(7)
    arr = np.full((side, side, 3), 255, np.uint8)
    lo, hi = side // 8, side - side // 8
    tex = rng.integers(0, 256, (hi - lo, hi - lo, 3), dtype=np.uint8)
    tex = np.asarray(Image.fromarray(tex).resize((hi - lo, hi - lo)), np.uint8)
    arr[lo:hi, lo:hi] = (tex // 2 + np.array([20, 40, 90], np.uint8)).astype(np.uint8)
    im = Image.fromarray(arr)
    draw = ImageDraw.Draw(im)
    for y in range(lo + 20, hi - 20, 9):  # label lines
        draw.line((lo + 30, y, hi - 30, y), fill=(250, 240, 230), width=2)
    return im


def test_a_1600px_source_keeps_its_sharpness_at_2048(tmp_path: Path) -> None:
    """Placed at 2048² straight from the 1600-px source (one Lanczos resample), composited and
    watermarked at 2048²: inside the product the published PNG is a single Lanczos resize of
    the source (PSNR >= 40 dB; exactly equal, in fact). The old way, the product shrunk into
    the 512 model canvas and brought back up, fails the same check."""
    source = _detailed_source()
    cut = cut_out(source)
    spec = PlacementSpec(scale=0.6)
    got = placed_for_output(cut, spec, (512, 512), (2048, 2048), "drawn")
    assert not isinstance(got, str)
    canvas, full = got
    assert canvas.rgb.shape == (512, 512, 3) and full.rgb.shape == (2048, 2048, 3)
    # The reference: one Lanczos resize (PIL) of the source's product region, computed here.
    ys, xs = np.nonzero(cut.alpha > 0)
    sx0, sy0, sx1, sy1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    hy, hx = np.nonzero(cut.mask)
    hx0, hy0 = hx.min(), hy.min()
    longest = max(hx.max() + 1 - hx0, hy.max() + 1 - hy0)
    factor = min(spec.scale, 1 - 2 * spec.margin) * 2048 / longest  # as place() scales
    x0, y0, _, _ = full.box
    size = (round((sx1 - sx0) * factor), round((sy1 - sy0) * factor))
    ref_region = source.crop((sx0, sy0, sx1, sy1)).resize(size, Image.Resampling.LANCZOS)
    ox, oy = x0 + round((sx0 - hx0) * factor), y0 + round((sy0 - hy0) * factor)
    reference = np.zeros_like(full.rgb)
    reference[oy : oy + size[1], ox : ox + size[0]] = np.asarray(ref_region)
    core = full.core
    assert core.sum() > 1_000_000  # the product is large: ~1230 px a side

    # The model's scene (a stand-in: noise at 512, the model's size), composited at 2048².
    scene = np.random.default_rng(1).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    scene_up = Image.fromarray(scene).resize((2048, 2048), Image.Resampling.LANCZOS)
    final, exact = composite_checked(scene_up, full)
    assert exact.ok
    gate = g.load_gate(settings(tmp_path))
    made = gate.finalize(31, final, prov(31), "png", KeepPixels(full.rgb, core))
    assert made.verified
    published = np.asarray(Image.open(io.BytesIO(made.data)).convert("RGB"))
    assert published.shape == (2048, 2048, 3)
    assert psnr(published[core], reference[core]) >= 40.0

    # The check can fail: the product shrunk into the 512 canvas and brought back up.
    small = place(cut, spec, 512, 512)
    twice = np.asarray(
        Image.fromarray(small.rgb).resize((2048, 2048), Image.Resampling.LANCZOS), np.uint8
    )
    assert psnr(twice[core], reference[core]) < 40.0


def test_a_one_to_one_product_is_copied_at_the_output_size() -> None:
    """A product whose size at the output equals its size in the source is copied, not
    resampled, even when the model's canvas is smaller."""
    src = _detailed_source(400)
    cut = cut_out(src)
    ys, xs = np.nonzero(cut.mask)
    side = max(xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min())
    out = 512
    spec = PlacementSpec(scale=side / out, margin=0.0)
    got = placed_for_output(cut, spec, (128, 128), (out, out), "drawn")
    assert not isinstance(got, str)
    _, full = got
    x0, y0, x1, y1 = full.box
    assert (x1 - x0, y1 - y0) == (xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min())
    src_rgb = np.asarray(src.convert("RGB"))
    dx, dy = x0 - xs.min(), y0 - ys.min()
    yy, xx = np.nonzero(full.core)
    assert np.array_equal(full.rgb[yy, xx], src_rgb[yy - dy, xx - dx])
