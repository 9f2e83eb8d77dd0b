"""The CLIP similarity between a packshot shot's product and its source (issue 15, part 6):
recorded on the shot beside the pixel checks, computed on the product's bounding box."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from PIL import Image

from pipeline.gate.stage import ClipGate
from pipeline.packshot.fidelity import clip_similarity
from tasks.fakes import PassThroughGate


class MeanColourEncoder:
    """An encoder whose embedding is a crop's mean colour (plus a constant): crops of the same
    product agree, a recoloured product does not. Records the crop sizes it saw."""

    def __init__(self) -> None:
        self.sizes: list[tuple[int, int]] = []

    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        self.sizes += [im.size for im in images]
        return np.stack(
            [np.r_[np.asarray(im, dtype=np.float64).mean(axis=(0, 1)) - 128, 1.0] for im in images]
        )


def _scene() -> tuple[np.ndarray, np.ndarray]:
    source = np.full((64, 64, 3), 255, np.uint8)
    source[20:40, 10:30] = (200, 30, 30)
    core = np.zeros((64, 64), bool)
    core[20:40, 10:30] = True
    return source, core


def test_similarity_is_computed_on_the_product_box() -> None:
    source, core = _scene()
    out = source.copy()
    out[~core] = (0, 90, 0)  # a generated scene around the product
    enc = MeanColourEncoder()
    same = clip_similarity(enc, out, source, core)
    assert same is not None and same > 0.999
    assert enc.sizes == [(20, 20), (20, 20)]
    recoloured = out.copy()
    recoloured[core] = (30, 30, 200)
    other = clip_similarity(enc, recoloured, source, core)
    assert other is not None and other < 0.5
    assert clip_similarity(enc, out, source, np.zeros_like(core)) is None


def test_only_a_gate_with_an_encoder_records_it() -> None:
    enc = MeanColourEncoder()
    real = ClipGate(filter=SimpleNamespace(encoder=enc))  # type: ignore[arg-type]
    stand_in = PassThroughGate()
    assert real.image_encoder is enc
    assert stand_in.image_encoder is None
