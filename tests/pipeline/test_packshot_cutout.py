"""Cutouts of the drawn sample packshots against the masks the drawing script wrote."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.packshot.cutout import CutoutError, CutoutParams, cut_out, mask_sha256

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "packshots"


def _load(name: str) -> tuple[Image.Image, np.ndarray]:
    with Image.open(SAMPLES / f"{name}.png") as im:
        im.load()
        image = im.copy()
    with Image.open(SAMPLES / f"{name}_mask.png") as m:
        truth = np.asarray(m.convert("L")) >= 128
    return image, truth


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.mark.parametrize("name", ["mug", "bottle", "pillow", "ball"])
def test_sample_cutouts_match_the_drawn_masks(name: str) -> None:
    image, truth = _load(name)
    cut = cut_out(image)
    assert _iou(cut.mask, truth) >= 0.97
    assert cut.confidence["components"] == 1
    assert cut.mask_sha256 == mask_sha256(cut.alpha)


def test_white_label_inside_the_bottle_stays_foreground() -> None:
    image, truth = _load("bottle")
    cut = cut_out(image)
    # The label is drawn in the background's own colour at (196..316, 250..380) of 512.
    s = image.width / 512
    label = (slice(int(260 * s), int(370 * s)), slice(int(206 * s), int(306 * s)))
    assert truth[label].all()
    assert (cut.alpha[label] == 255).all()
    assert cut.method == "flood_grabcut"
    assert cut.background is not None and min(cut.background) >= 245


def test_near_white_patch_on_the_pillow_stays_foreground() -> None:
    image, _ = _load("pillow")
    cut = cut_out(image)
    s = image.width / 512
    patch = (slice(int(215 * s), int(295 * s)), slice(int(205 * s), int(305 * s)))
    assert (cut.alpha[patch] == 255).all()


def test_transparent_png_uses_its_own_alpha() -> None:
    image, _ = _load("ball")
    assert image.mode == "RGBA"
    cut = cut_out(image)
    assert cut.method == "alpha"
    assert np.array_equal(cut.alpha, np.asarray(image.getchannel("A")))
    assert cut.params == {}


def test_lifestyle_like_noisy_background_is_refused() -> None:
    rng = np.random.default_rng(7)
    scene = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    scene[40:90, 40:90] = (200, 30, 30)
    with pytest.raises(CutoutError, match=r"lifestyle\.jpg: background is not uniform"):
        cut_out(Image.fromarray(scene), what="lifestyle.jpg")


def test_learned_matte_accepts_a_non_uniform_background() -> None:
    rng = np.random.default_rng(8)
    scene = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    want = np.zeros((64, 64), np.float32)
    want[16:48, 20:44] = 1.0
    cut = cut_out(Image.fromarray(scene), matte=lambda rgb: want)
    assert cut.method == "onnx"
    assert np.array_equal(cut.mask, want > 0.5)
    assert cut.confidence["border_match"] < 0.5


def test_empty_and_full_images_are_refused_with_a_reason() -> None:
    blank = Image.new("RGB", (64, 64), (255, 255, 255))
    with pytest.raises(CutoutError, match="no product found"):
        cut_out(blank, what="blank.png")
    with pytest.raises(CutoutError, match="too small"):
        cut_out(Image.new("RGB", (8, 8)), what="tiny.png")


def test_params_are_recorded_and_change_the_mask_hash() -> None:
    image, _ = _load("mug")
    a = cut_out(image)
    b = cut_out(image, CutoutParams(feather_px=4))
    assert a.params["feather_px"] == 2 and b.params["feather_px"] == 4
    assert a.mask_sha256 != b.mask_sha256
    assert a.lineage()["method"] == "flood_grabcut"
    # Deterministic: the same input and parameters give the same mask.
    assert cut_out(image).mask_sha256 == a.mask_sha256


def test_learned_matte_setting_refuses_clearly(tmp_path: Path) -> None:
    from pipeline.packshot.onnx_matte import load_matte

    with pytest.raises(CutoutError, match=r"must be a local \.onnx model"):
        load_matte(tmp_path / "matte.pt")
    with pytest.raises(CutoutError, match="not found"):
        load_matte(tmp_path / "matte.onnx")
    model = tmp_path / "birefnet.onnx"
    model.write_bytes(b"not a model")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        with pytest.raises(CutoutError, match="onnxruntime is not installed"):
            load_matte(model)
    else:
        with pytest.raises(CutoutError, match="cannot load the ONNX model"):
            load_matte(model)
