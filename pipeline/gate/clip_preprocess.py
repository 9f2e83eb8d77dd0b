"""open_clip's evaluation transform for a whole batch at once, bit-identical to the original.

The gate sends every image through CLIP as ten crops (the full frame plus a 3x3 grid). The
stock transform (Resize -> CenterCrop -> RGB -> ToTensor -> Normalize) runs per crop, and
at the control plane's rates its per-call tensor work costs more than the model itself.
Here only the resize stays per crop, done by PIL exactly as torchvision does for PIL input;
the crop is a numpy slice and the float conversion and normalisation are one tensor
operation over the stacked batch. ``FastClipPreprocess.from_transform`` recognises only the
standard pipeline and returns None for anything else, so unusual models keep their own
transform.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

_CONVERT_STEPS = ("MaybeConvertMode", "_convert_to_rgb")
_TENSOR_STEPS = ("MaybeToTensor", "ToTensor")


@dataclass(frozen=True)
class FastClipPreprocess:
    resize: int | tuple[int, int]  # an int: the shorter side; a pair: (height, width)
    resample: int  # PIL resampling filter
    crop: tuple[int, int]  # (height, width)
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_transform(cls, transform: Any) -> FastClipPreprocess | None:
        """The fast equivalent of ``transform``, or None when it is not the standard one."""
        from torchvision.transforms import CenterCrop, Normalize, Resize
        from torchvision.transforms.functional import pil_modes_mapping

        steps = list(getattr(transform, "transforms", []))
        if len(steps) != 5:
            return None
        resize, crop, convert, to_tensor, norm = steps
        convert_name = getattr(convert, "__name__", type(convert).__name__)
        if not (
            isinstance(resize, Resize)
            and isinstance(crop, CenterCrop)
            and isinstance(norm, Normalize)
            and convert_name in _CONVERT_STEPS
            and getattr(convert, "mode", "RGB") == "RGB"
            and type(to_tensor).__name__ in _TENSOR_STEPS
            and resize.max_size is None
            and resize.interpolation in pil_modes_mapping
        ):
            return None
        size = resize.size
        if isinstance(size, Sequence):
            if len(size) == 1:
                size = int(size[0])
            elif len(size) == 2:
                size = (int(size[0]), int(size[1]))
            else:
                return None
        crop_size = tuple(int(v) for v in crop.size)
        if len(crop_size) != 2:
            return None
        return cls(
            resize=size,
            resample=int(pil_modes_mapping[resize.interpolation]),
            crop=(crop_size[0], crop_size[1]),
            mean=tuple(float(v) for v in norm.mean),
            std=tuple(float(v) for v in norm.std),
        )

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after Resize, by torchvision's own rule for an int size."""
        if not isinstance(self.resize, int):
            return self.resize[1], self.resize[0]
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.resize, int(self.resize * long / short)
        return (new_short, new_long) if width <= height else (new_long, new_short)

    def __call__(self, images: Sequence[Image.Image]) -> Any:
        """A float32 (N, 3, H, W) tensor, equal to stacking the stock transform's outputs.
        Raises ValueError for an image smaller than the crop after resizing (the stock
        transform would pad it); callers fall back to the stock transform then."""
        import torch

        ch, cw = self.crop
        arrays = []
        for im in images:
            if im.mode != "RGB":
                im = im.convert("RGB")
            nw, nh = self.resized_size(*im.size)
            if nw < cw or nh < ch:
                raise ValueError("image smaller than the CLIP crop: needs padding")
            if (nw, nh) != im.size:
                im = im.resize((nw, nh), self.resample)
            # torchvision's CenterCrop offsets (round half to even), applied as a slice.
            top, left = round((nh - ch) / 2.0), round((nw - cw) / 2.0)
            arrays.append(np.asarray(im)[top : top + ch, left : left + cw])
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
        out = batch.to(dtype=torch.float32).div(255)
        mean = torch.as_tensor(self.mean, dtype=out.dtype).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=out.dtype).view(-1, 1, 1)
        return out.sub_(mean).div_(std)
