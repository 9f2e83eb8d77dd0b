"""Packshot generation through the real tiny inpainting paths, then composite back.

Both ways a worker can inpaint: ``from_pipe`` on the loaded text-to-image tiny model (4-channel
UNet, no second load) and a brand's ``inpaint_model`` (the 9-channel ``tiny-inpaint``). The
scenes are noise (random weights); what is checked is that the product comes back exactly.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.generate.generator import load_generator
from pipeline.generate.inpaint import Inpainter, InpaintShot
from pipeline.packshot.cutout import cut_out
from pipeline.packshot.fidelity import check_exact
from pipeline.packshot.placement import Placed, PlacementSpec, place
from pipeline.settings import Settings
from pipeline.types import AdapterRef, ShotParams

torch.set_num_threads(1)  # 2 shared cores

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "packshots"
SAMPLE_LORA = AdapterRef(
    name="acme_style",
    sha256="ee07148773317d314958447567ef936a26e225d04a875968e3d7b8f0aa56e528",
    weight=0.8,
    uri=str(ROOT / "samples" / "loras" / "acme_style_tiny.safetensors"),
)
SIZE = 64


@pytest.fixture(scope="module")
def settings(cpu_settings: Settings) -> Settings:
    return cpu_settings


@pytest.fixture(scope="module", params=["tiny", "tiny-inpaint"])
def inpainter(request: pytest.FixtureRequest, settings: Settings) -> Inpainter:
    return Inpainter(load_generator(settings, request.param))


@pytest.fixture(scope="module")
def placements() -> dict[str, Placed]:
    out = {}
    for name, shadow in [("mug", "contact"), ("bottle", "drop"), ("ball", "none")]:
        with Image.open(SAMPLES / f"{name}.png") as im:
            cut = cut_out(im.copy())
        spec = PlacementSpec(scale=0.7, anchor="bottom", shadow=shadow)  # type: ignore[arg-type]
        out[name] = place(cut, spec, SIZE, SIZE)
    return out


def _shot(i: int, model_id: str, **kw: object) -> ShotParams:
    base = ShotParams(
        shot_id=i,
        prompt=f"product on a kitchen counter {i}",
        negative_prompt="blurry",
        seed=500 + i,
        model_id=model_id,
        width=SIZE,
        height=SIZE,
        steps=2,
        guidance=5.0,
        scheduler="euler",
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_product_pixels_survive_in_a_batch_and_alone(
    inpainter: Inpainter, placements: dict[str, Placed]
) -> None:
    shots = [
        InpaintShot(_shot(i, inpainter.model_id), p) for i, p in enumerate(placements.values())
    ]
    batch = inpainter.generate(shots, batch_id="b")
    alone = inpainter.generate(shots[1:2])
    for res, shot in zip(batch, shots, strict=True):
        assert res.output.error is None
        assert res.fidelity is not None and res.fidelity.ok, res.fidelity
        assert res.output.image is not None and res.raw is not None
        placed = shot.placed
        final = np.asarray(res.output.image)
        assert np.array_equal(final[placed.core], placed.rgb[placed.core])
        # The VAE round trip alone would not have kept the product (diffusers #4782).
        assert not check_exact(res.raw, placed.rgb, placed.core).ok
        # Outside the product the image is the generated scene.
        bg = placed.alpha == 0
        assert not np.array_equal(final[bg], placed.rgb[bg])
    assert [r.output.shot_id for r in batch] == [0, 1, 2]
    assert len({r.output.sha256 for r in batch}) == 3  # each shot its own image and mask
    # The same shot alone gives the same bytes (own generator, batch-invariant on the CPU).
    assert alone[0].output.sha256 == batch[1].output.sha256
    assert batch[0].output.timings["batch_size"] == 3.0
    assert "composite" in batch[0].output.timings


def test_from_pipe_shares_the_loaded_modules(settings: Settings) -> None:
    gen = load_generator(settings, "tiny")
    inp = Inpainter(gen)
    assert inp.pipe.unet is gen.pipe.unet and inp.pipe.vae is gen.pipe.vae
    assert inp.channels == 4
    assert type(inp.pipe).__name__ == "StableDiffusionInpaintPipeline"


def test_unet_channels_match_the_model(inpainter: Inpainter) -> None:
    # tiny-inpaint is the 9-channel layout (latents + mask + masked-image latents), loaded
    # through load_generator like any model; from_pipe on "tiny" keeps the 4-channel UNet.
    assert inpainter.channels == (9 if inpainter.model_id == "tiny-inpaint" else 4)
    assert len(inpainter.generator.model_digest) == 64


def test_lora_changes_the_scene_not_the_product(
    inpainter: Inpainter, placements: dict[str, Placed]
) -> None:
    placed = placements["mug"]
    plain = _shot(7, inpainter.model_id)
    styled = replace(plain, adapters=(SAMPLE_LORA,))
    a, b = inpainter.generate([InpaintShot(plain, placed), InpaintShot(styled, placed)])
    assert a.output.sha256 != b.output.sha256
    assert a.fidelity is not None and a.fidelity.ok
    assert b.fidelity is not None and b.fidelity.ok


def test_a_bad_shot_fails_alone(inpainter: Inpainter, placements: dict[str, Placed]) -> None:
    good = InpaintShot(_shot(1, inpainter.model_id), placements["ball"])
    wrong_size = InpaintShot(_shot(2, inpainter.model_id, width=128, height=128), placements["mug"])
    small = place(cut_out(Image.open(SAMPLES / "pillow.png")), PlacementSpec(), 32, 32)
    # Same batch key as ``good`` (64x64 shot), but its placement was made for 32x32.
    mismatched = InpaintShot(_shot(3, inpainter.model_id), small)
    res = inpainter.generate([good, wrong_size, mismatched])
    assert res[0].output.error is None and res[0].fidelity is not None and res[0].fidelity.ok
    assert res[1].output.error is not None and "placement is 64x64" in res[1].output.error
    assert res[2].output.error is not None and "placement is 32x32" in res[2].output.error
    assert res[2].fidelity is None and res[2].output.image is None
