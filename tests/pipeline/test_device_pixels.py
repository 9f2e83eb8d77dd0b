"""The gate on the GPU host scores the decoded pixels where they are: the same numbers the cpu
path computes from the PNG (fp32 on the CPU: to 1e-5), and the same pixels diffusers makes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.image_processor import VaeImageProcessor
from PIL import Image

from pipeline.gate.clip import load_clip_encoder
from pipeline.gate.policy import GatePolicy
from pipeline.gate.scores import ClipFilter
from pipeline.generate.generator import load_generator, to_uint8
from pipeline.settings import Settings
from pipeline.types import GateItem, ShotParams

torch.set_num_threads(1)  # 2 shared cores
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def settings(cpu_settings: Settings) -> Settings:
    return cpu_settings


def policy() -> GatePolicy:
    from pipeline.brand.loader import find_brand

    return GatePolicy.from_brand(find_brand(ROOT / "samples" / "brands", "acme"))


def params(shot_id: int) -> ShotParams:
    return ShotParams(
        shot_id=shot_id,
        prompt=f"studio product photo of item {shot_id}",
        negative_prompt="blurry",
        seed=77 + shot_id,
        model_id="tiny",
        width=64,
        height=64,
        steps=3,
        guidance=5.0,
        scheduler="euler",
    )


def test_uint8_pixels_equal_diffusers_postprocess() -> None:
    # Values beyond [-1, 1] (clamped) and exactly on rounding boundaries included.
    decoded = torch.randn(3, 3, 40, 56, generator=torch.Generator().manual_seed(0)) * 0.7
    decoded[0, 0, 0, :6] = torch.tensor([-1.5, -1.0, 1.0, 1.5, 1 / 255 - 1, 0.0])
    want = VaeImageProcessor().postprocess(decoded, output_type="pil")
    got = to_uint8(decoded).permute(0, 2, 3, 1).numpy()
    for g, w in zip(got, want, strict=True):
        assert np.array_equal(g, np.asarray(w))


def test_scores_from_device_pixels_equal_scores_from_the_png(settings: Settings) -> None:
    gen = load_generator(settings, "tiny")
    outs = gen.generate([params(1), params(2)], batch_id="b")
    clip = ClipFilter(load_clip_encoder(settings), crop_grid=3)
    from_png, from_pixels = [], []
    for out in outs:
        assert out.error is None and out.png is not None and out.pixels is not None
        assert out.pixels.dtype == torch.uint8 and tuple(out.pixels.shape) == (3, 64, 64)
        png = Image.open(io.BytesIO(out.png)).convert("RGB")
        assert np.array_equal(out.pixels.permute(1, 2, 0).numpy(), np.asarray(png))
        from_png.append(GateItem(out.shot_id, png, "a blue mug"))
        from_pixels.append(GateItem(out.shot_id, png, "a blue mug", out.pixels))
    _compare(clip, from_png, from_pixels)


def test_scores_agree_for_a_512_image_through_its_tiles(settings: Settings) -> None:
    # A gate-size image: the full frame is shrunk and the 170-pixel tiles are resized.
    rng = np.random.default_rng(4)
    small = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((512, 512), Image.Resampling.BICUBIC)
    pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
    clip = ClipFilter(load_clip_encoder(settings), crop_grid=3)
    _compare(clip, [GateItem(1, image, "a mug")], [GateItem(1, image, "a mug", pixels)])


def _compare(clip: ClipFilter, a: list[GateItem], b: list[GateItem]) -> None:
    pol = policy()
    da, db = clip.check(a, pol), clip.check(b, pol)
    for x, y in zip(da, db, strict=True):
        assert x.decision == y.decision and x.reasons == y.reasons
        assert x.embedding is not None and y.embedding is not None
        np.testing.assert_allclose(x.embedding, y.embedding, atol=1e-5, rtol=0)
        for sx, sy in zip(x.scores, y.scores, strict=True):
            assert sx["name"] == sy["name"]
            assert abs(float(sx["score"]) - float(sy["score"])) <= 1e-5
