"""The batched CLIP preprocessing gives exactly the stock open_clip transform's tensors."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from pipeline.gate.clip import OpenClipEncoder
from pipeline.gate.clip_preprocess import FastClipPreprocess
from pipeline.gate.scores import crop_grid


def noise(w: int, h: int, seed: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB").convert(mode)


def stock(transform: T.Compose, images: list[Image.Image]) -> torch.Tensor:
    return torch.stack([transform(im) for im in images])


# Square, portrait, landscape, smaller and larger than the model input, odd sizes (rounding
# in the resize and the centre crop), and non-RGB modes.
IMAGES = [
    noise(64, 64, 0),
    noise(256, 256, 1),
    noise(21, 22, 2),
    noise(300, 97, 3),
    noise(97, 301, 4),
    noise(1023, 769, 5),
    noise(225, 224, 6, "L"),
    noise(80, 80, 7, "RGBA"),
]


@pytest.mark.parametrize("image_size", [64, 224, (224, 224), 336])
def test_batched_equals_stock_transform(image_size: int | tuple[int, int]) -> None:
    transform = open_clip.image_transform(image_size, is_train=False)
    fast = FastClipPreprocess.from_transform(transform)
    assert fast is not None
    got = fast(IMAGES)
    want = stock(transform, IMAGES)
    assert got.dtype == want.dtype == torch.float32
    assert torch.equal(got, want)


def test_crop_grid_of_a_gate_image_is_exact() -> None:
    transform = open_clip.image_transform(64, is_train=False)
    fast = FastClipPreprocess.from_transform(transform)
    assert fast is not None
    crops = crop_grid(noise(256, 256, 9), 3) + crop_grid(noise(64, 64, 10), 3)
    assert torch.equal(fast(crops), stock(transform, crops))


def test_non_standard_transforms_keep_their_own_path() -> None:
    squash = open_clip.image_transform(64, is_train=False, resize_mode="squash")
    assert FastClipPreprocess.from_transform(squash) is None
    train = open_clip.image_transform(64, is_train=True)
    assert FastClipPreprocess.from_transform(train) is None
    assert FastClipPreprocess.from_transform(lambda im: im) is None


def test_image_that_needs_padding_falls_back_to_the_stock_transform() -> None:
    # Resize to 64 then CenterCrop to 80: the stock transform pads; the fast path refuses.
    transform = T.Compose(
        [
            T.Resize(64, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(80),
            open_clip.transform.MaybeConvertMode("RGB"),
            open_clip.transform.MaybeToTensor(),
            T.Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
        ]
    )
    fast = FastClipPreprocess.from_transform(transform)
    assert fast is not None
    with pytest.raises(ValueError, match="padding"):
        fast([noise(64, 64, 11)])

    enc = OpenClipEncoder(torch.nn.Identity(), transform, tokenizer=None, name="padding")
    assert enc.fast_preprocess == fast
    images = [noise(64, 64, 11), noise(90, 70, 12)]
    assert torch.equal(enc._batch(images), stock(transform, images))
