"""The gate's CLIP preprocessing in torch: PIL images and pixel tensors give the same tensors,
and both stay within one grey level of the stock (PIL-based) open_clip transform."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from pipeline.gate.clip import OpenClipEncoder
from pipeline.gate.clip_preprocess import (
    TensorClipPreprocess,
    pil_to_pixels,
    pixel_grid,
    resample_matrix,
)
from pipeline.gate.scores import crop_grid


def noise(w: int, h: int, seed: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB").convert(mode)


def stock(transform: T.Compose, images: list[Image.Image]) -> torch.Tensor:
    return torch.stack([transform(im) for im in images])


def grey_levels(a: torch.Tensor, b: torch.Tensor, tp: TensorClipPreprocess) -> torch.Tensor:
    """|a - b| in 0..255 grey levels (undoing the normalisation's division by std)."""
    return (a - b).abs() * torch.tensor(tp.std).view(1, -1, 1, 1) * 255


# Square, portrait, landscape, smaller and larger than the model input, odd sizes (rounding
# in the resize and the centre crop), the gate's 3x3 tiles of 512 px, and non-RGB modes.
IMAGES = [
    noise(64, 64, 0),
    noise(256, 256, 1),
    noise(21, 22, 2),
    noise(300, 97, 3),
    noise(97, 301, 4),
    noise(1023, 769, 5),
    noise(171, 170, 8),
    noise(225, 224, 6, "L"),
    noise(80, 80, 7, "RGBA"),
]


@pytest.mark.parametrize("image_size", [64, 224, (224, 224), 336])
def test_close_to_the_stock_transform(image_size: int | tuple[int, int]) -> None:
    transform = open_clip.image_transform(image_size, is_train=False)
    tp = TensorClipPreprocess.from_transform(transform)
    assert tp is not None
    got = tp([pil_to_pixels(im) for im in IMAGES])
    want = stock(transform, IMAGES)
    assert got.shape == want.shape and got.dtype == want.dtype == torch.float32
    levels = grey_levels(got, want, tp)
    # Pure noise is the worst case: where Pillow runs its passes in the other order, the
    # clipped bicubic overshoot between them moves a few pixels by several levels.
    assert float(levels.max()) <= 8.0 + 1e-4
    assert float(levels.mean()) < 0.3


def test_the_gate_tiles_are_within_one_grey_level_of_the_stock_transform() -> None:
    transform = open_clip.image_transform(224, is_train=False)
    tp = TensorClipPreprocess.from_transform(transform)
    assert tp is not None
    crops = crop_grid(noise(512, 512, 13), 3)  # the full frame (shrunk) and 170 px tiles
    got = tp([pil_to_pixels(c) for c in crops])
    levels = grey_levels(got, stock(transform, crops), tp)
    assert float(levels.max()) <= 1.0 + 1e-4
    assert float(levels.mean()) < 0.01


def test_resample_matrix_is_pils_filter() -> None:
    # One row of PIL's own 1-D resize: an image one pixel high, resized in width only.
    row = np.random.default_rng(3).integers(0, 256, (1, 170), dtype=np.uint8)
    for new in (224, 97, 64):
        want = np.asarray(Image.fromarray(row, "L").resize((new, 1), Image.Resampling.BICUBIC))
        got = np.clip(
            np.round(row.astype(np.float64) @ resample_matrix(170, new, "bicubic").T), 0, 255
        )
        assert np.abs(got - want).max() <= 1
    weights = resample_matrix(512, 224, "bicubic")
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-12)


def test_pil_images_and_pixel_tensors_give_the_same_tensors() -> None:
    transform = open_clip.image_transform(64, is_train=False)
    tp = TensorClipPreprocess.from_transform(transform)
    assert tp is not None
    image = noise(512, 512, 9)
    pil_crops = [pil_to_pixels(c) for c in crop_grid(image, 3)]
    tensor_crops = pixel_grid(pil_to_pixels(image), 3)
    assert len(pil_crops) == len(tensor_crops) == 10
    for a, b in zip(pil_crops, tensor_crops, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(tp(pil_crops), tp(tensor_crops))


def test_non_standard_transforms_keep_their_own_path() -> None:
    squash = open_clip.image_transform(64, is_train=False, resize_mode="squash")
    assert TensorClipPreprocess.from_transform(squash) is None
    train = open_clip.image_transform(64, is_train=True)
    assert TensorClipPreprocess.from_transform(train) is None
    assert TensorClipPreprocess.from_transform(lambda im: im) is None


def test_image_that_needs_padding_falls_back_to_the_stock_transform() -> None:
    # Resize to 64 then CenterCrop to 80: the stock transform pads; the tensor path refuses.
    transform = T.Compose(
        [
            T.Resize(64, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(80),
            open_clip.transform.MaybeConvertMode("RGB"),
            open_clip.transform.MaybeToTensor(),
            T.Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
        ]
    )
    tp = TensorClipPreprocess.from_transform(transform)
    assert tp is not None
    with pytest.raises(ValueError, match="padding"):
        tp([pil_to_pixels(noise(64, 64, 11))])

    enc = OpenClipEncoder(torch.nn.Identity(), transform, tokenizer=None, name="padding")
    assert enc.tensor_preprocess == tp
    images = [noise(64, 64, 11), noise(90, 70, 12)]
    got = enc._batch([pil_to_pixels(im) for im in images])
    assert torch.equal(got, stock(transform, images))
