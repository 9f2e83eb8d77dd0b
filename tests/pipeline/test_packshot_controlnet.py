"""The optional ControlNet for packshot shots, on the tiny preset: the placed packshot's canny
edges condition the scene (it changes the generated pixels), the product still comes back
bit for bit, the weights are the file the shot was planned with, and brand files are checked.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from pipeline.brand.config import BrandConfig
from pipeline.generate.controlnet import (
    TINY_CONTROLNET,
    ControlSpec,
    control_image,
    controlnet_file,
    plan_spec,
)
from pipeline.generate.generator import load_generator
from pipeline.generate.inpaint import Inpainter, InpaintShot
from pipeline.generate.modelspec import ModelLoadError
from pipeline.packshot.cutout import cut_out
from pipeline.packshot.placement import PlacementSpec, place
from pipeline.settings import Settings
from pipeline.types import ShotParams

torch.set_num_threads(1)  # 2 shared cores
ROOT = Path(__file__).resolve().parents[2]
SIZE = 64


@pytest.fixture(scope="module")
def settings(cpu_settings: Settings) -> Settings:
    return cpu_settings


@pytest.fixture(scope="module")
def spec(settings: Settings) -> ControlSpec:
    return plan_spec(TINY_CONTROLNET, None, {"scale": 1.0}, settings)


def _shots() -> list[InpaintShot]:
    shots = []
    for i, name in enumerate(("mug", "bottle")):
        with Image.open(ROOT / "samples" / "packshots" / f"{name}.png") as im:
            cut = cut_out(im.copy())
        placed = place(cut, PlacementSpec(scale=0.7, anchor="bottom"), SIZE, SIZE)
        params = ShotParams(
            shot_id=i,
            prompt="product on a kitchen counter",
            negative_prompt="blurry",
            seed=900 + i,
            model_id="tiny",
            width=SIZE,
            height=SIZE,
            steps=2,
            guidance=5.0,
            scheduler="euler",
        )
        shots.append(InpaintShot(params, placed))
    return shots


@pytest.mark.parametrize("model_id", ["tiny", "tiny-inpaint"])
def test_controlnet_conditions_the_scene_and_keeps_the_product(
    settings: Settings, spec: ControlSpec, model_id: str
) -> None:
    inpainter = Inpainter(load_generator(settings, model_id))
    shots = [replace(s, params=replace(s.params, model_id=model_id)) for s in _shots()]
    plain = inpainter.generate(shots)
    controlled = inpainter.generate(shots, control=spec)
    again = inpainter.generate(shots[1:], control=spec)
    # At scale 0 its residuals vanish: exactly the plain inpainting. So what differs at
    # scale 1 is the control image's doing, not another pipeline's.
    off = inpainter.generate(shots, control=replace(spec, scale=0.0))
    assert [r.output.sha256 for r in off] == [r.output.sha256 for r in plain]
    pipe = inpainter._pipe_for(spec)
    assert type(pipe).__name__ == "StableDiffusionControlNetInpaintPipeline"
    assert pipe.unet is inpainter.pipe.unet  # the loaded modules, shared
    for a, b, shot in zip(plain, controlled, shots, strict=True):
        assert a.output.error is None and b.output.error is None, b.output.error
        assert b.fidelity is not None and b.fidelity.ok
        core = shot.placed.core
        final = np.asarray(b.output.image)
        assert np.array_equal(final[core], shot.placed.rgb[core])
        # The control image changed what was generated around the product.
        assert a.output.sha256 != b.output.sha256
    assert again[0].output.sha256 == controlled[1].output.sha256  # alone == in its batch


def test_control_image_is_the_packshots_edges(spec: ControlSpec) -> None:
    shot = _shots()[0]
    edges = np.asarray(control_image(shot.placed.rgb, spec))
    assert edges.shape == (SIZE, SIZE, 3) and set(np.unique(edges)) <= {0, 255}
    assert edges[..., 0].any()  # the product's outline is there
    assert not edges[shot.placed.alpha == 0][:, 0].all()


def test_a_swapped_file_fails_the_shots_that_recorded_another(
    settings: Settings, spec: ControlSpec, tmp_path: Path
) -> None:
    folder = tmp_path / "cn"
    shutil.copytree(Path(spec.path).parent, folder)
    weights = folder / Path(spec.path).name
    recorded = replace(spec, path=str(weights))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # same size, one bit of a weight flipped
    weights.write_bytes(bytes(data))
    inpainter = Inpainter(load_generator(settings, "tiny"))
    out = inpainter.generate(_shots()[:1], control=recorded)
    assert out[0].output.error is not None
    assert "is not the" in out[0].output.error and spec.sha256 in out[0].output.error


def test_plan_spec_checks_the_pin_and_the_format(settings: Settings, tmp_path: Path) -> None:
    real = controlnet_file(TINY_CONTROLNET, settings)
    with pytest.raises(ModelLoadError, match="does not match the pin"):
        plan_spec(str(real), "0" * 64, {}, settings)
    bad = tmp_path / "cn.safetensors"
    bad.write_bytes(b"\x80\x04not safetensors at all")
    with pytest.raises(ModelLoadError, match="safetensors"):
        plan_spec(str(bad), None, {}, settings)


@pytest.mark.parametrize(
    ("controlnet", "message"),
    [
        ({"path": "cn.ckpt"}, "pickle formats"),
        ({"path": "https://example.com/cn.safetensors"}, "local file"),
        ({"path": "cn.safetensors", "sha256": 123}, "64 hex digit"),
        ({"path": "cn.safetensors", "kind": "depth"}, "canny"),
        ({"path": "cn.safetensors", "canny_low": 200, "canny_high": 100}, "canny_low"),
    ],
)
def test_brand_controlnet_is_validated(controlnet: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        BrandConfig.model_validate({"name": "acme", "controlnet": controlnet})


def test_a_brand_without_controlnet_keeps_its_digest() -> None:
    plain = BrandConfig.model_validate({"name": "acme"})
    assert "controlnet" not in plain.to_json()
    with_cn = BrandConfig.model_validate({"name": "acme", "controlnet": {"path": TINY_CONTROLNET}})
    assert with_cn.digest() != plain.digest()
