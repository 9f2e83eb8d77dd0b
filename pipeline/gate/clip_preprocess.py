"""open_clip's evaluation transform for uint8 pixel tensors, batched, on any device.

The gate sends every image through CLIP as ten crops (the full frame plus a 3x3 grid). On the
GPU host the images are still on the device right after the VAE decode, so the crops, the
resize and the normalisation run there in torch: no PIL round trip, no copy to the host. A
PIL image (the ``cpu`` queue, a rescore) is turned into the same uint8 tensor and goes
through the same code, so both paths give the same scores for the same pixels.

The resize is PIL's own resampling (``resample_matrix``: PIL's bicubic or bilinear filter,
widened when shrinking, the same support and normalisation), applied as two matrix products
with PIL's rounding to uint8 after each pass, horizontal first. torch's ``interpolate`` is
not that filter (its bicubic upsampling uses a = -0.75, PIL's -0.5: up to 24 grey levels
apart on a 3x3 tile of a 512-pixel image), so it is not used. Against the stock PIL transform
the gate's tiles differ by at most one grey level (a fixed-point sum and a float one round
apart). Pillow 13 sometimes runs the vertical pass first; on pure noise, where the bicubic
overshoot is clipped between passes, that order moves a few pixels by several levels
(tests/pipeline/test_clip_preprocess.py measures both).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

_CONVERT_STEPS = ("MaybeConvertMode", "_convert_to_rgb")
_TENSOR_STEPS = ("MaybeToTensor", "ToTensor")
_MODES = {"bicubic": "bicubic", "bilinear": "bilinear"}


def _bicubic(x: np.ndarray) -> np.ndarray:
    a = -0.5  # PIL's bicubic (Keys, a = -0.5)
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    out: np.ndarray = np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))
    return out


def _bilinear(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.clip(1.0 - np.abs(x), 0.0, None)
    return out


_FILTERS = {"bicubic": (_bicubic, 2.0), "bilinear": (_bilinear, 1.0)}


@functools.lru_cache(maxsize=256)  # a gate sees a handful of sizes: its images' tiles
def resample_matrix(in_size: int, out_size: int, mode: str) -> np.ndarray:
    """(out_size, in_size) weights of PIL's resampling along one axis (``precompute_coeffs``
    in Pillow's Resample.c): the filter's support grows with the shrink factor (that is the
    antialiasing), each output's weights sum to one."""
    fn, support = _FILTERS[mode]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support *= filterscale
    weights = np.zeros((out_size, in_size), dtype=np.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        w = fn((np.arange(xmin, xmax) - center + 0.5) / filterscale)
        total = w.sum()
        weights[xx, xmin:xmax] = w / total if total != 0.0 else w
    weights.flags.writeable = False  # shared by the cache
    return weights


def pil_to_pixels(image: Image.Image) -> Any:
    """A uint8 (3, H, W) CPU tensor of ``image`` in RGB (no copy beyond the conversion)."""
    import torch

    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)


def grid_boxes(width: int, height: int, n: int) -> list[tuple[int, int, int, int]]:
    """(left, top, right, bottom) of the full frame and an ``n`` x ``n`` tiling, with the
    same rounding as ``scores.crop_grid`` (so PIL crops and tensor slices are the same)."""
    boxes = [(0, 0, width, height)]
    if n <= 1:
        return boxes
    xs = [round(i * width / n) for i in range(n + 1)]
    ys = [round(j * height / n) for j in range(n + 1)]
    for j in range(n):
        for i in range(n):
            boxes.append((xs[i], ys[j], xs[i + 1], ys[j + 1]))
    return boxes


def pixel_grid(pixels: Any, n: int) -> list[Any]:
    """The crops of a (3, H, W) tensor as views (slices), in ``grid_boxes`` order."""
    _, h, w = pixels.shape
    return [pixels[:, t:b, left:r] for left, t, r, b in grid_boxes(w, h, n)]


@functools.lru_cache(maxsize=256)  # per batch on the GPU host: no rebuild, no host copy
def _weights_on(size: int, new: int, mode: str, start: int, keep: int, device: str) -> Any:
    """The kept rows of ``resample_matrix`` as a float32 tensor on ``device``."""
    import torch

    rows = resample_matrix(size, new, mode)[start : start + keep]
    return torch.tensor(rows, dtype=torch.float32, device=device)  # a copy: rows is shared


@dataclass(frozen=True)
class TensorClipPreprocess:
    resize: int | tuple[int, int]  # an int: the shorter side; a pair: (height, width)
    mode: str  # torch interpolate mode, antialiased
    crop: tuple[int, int]  # (height, width)
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_transform(cls, transform: Any) -> TensorClipPreprocess | None:
        """The tensor equivalent of ``transform``, or None when it is not the standard one."""
        from torchvision.transforms import CenterCrop, Normalize, Resize

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
            and getattr(resize.interpolation, "value", None) in _MODES
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
            mode=_MODES[str(resize.interpolation.value)],
            crop=(crop_size[0], crop_size[1]),
            mean=tuple(float(v) for v in norm.mean),
            std=tuple(float(v) for v in norm.std),
        )

    def _weights(self, size: int, new: int, start: int, keep: int, device: Any) -> Any:
        return _weights_on(size, new, self.mode, start, keep, str(device))

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after Resize, by torchvision's own rule for an int size."""
        if not isinstance(self.resize, int):
            return self.resize[1], self.resize[0]
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.resize, int(self.resize * long / short)
        return (new_short, new_long) if width <= height else (new_long, new_short)

    def __call__(self, pixels: Sequence[Any], device: Any = None, dtype: Any = None) -> Any:
        """A (N, 3, H, W) tensor of ``dtype`` (default float32) on ``device`` (default: the
        inputs') from uint8 (3, h, w) tensors of any sizes. Crops of one size are resized
        in one call. Raises ValueError for an image smaller than the crop after resizing
        (the stock transform would pad it); callers fall back to the stock transform then."""
        import torch

        if not pixels:
            raise ValueError("no images to preprocess")
        device = pixels[0].device if device is None else device
        ch, cw = self.crop
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, p in enumerate(pixels):
            groups[(int(p.shape[1]), int(p.shape[2]))].append(i)
        out = torch.empty((len(pixels), 3, ch, cw), dtype=torch.float32, device=device)
        for (h, w), idx in groups.items():
            nw, nh = self.resized_size(w, h)
            if nw < cw or nh < ch:
                raise ValueError("image smaller than the CLIP crop: needs padding")
            batch = torch.stack([pixels[i].to(device) for i in idx]).float()
            # torchvision's CenterCrop offsets (round half to even): only the output rows
            # and columns the crop keeps are computed.
            top, left = round((nh - ch) / 2.0), round((nw - cw) / 2.0)
            if nw != w:  # PIL: the horizontal pass first, rounded to uint8
                wx = self._weights(w, nw, left, cw, device)
                batch = torch.matmul(batch, wx.T).round_().clamp_(0, 255)
            else:
                batch = batch[:, :, :, left : left + cw]
            if nh != h:
                wy = self._weights(h, nh, top, ch, device)
                batch = torch.matmul(wy, batch).round_().clamp_(0, 255)
            else:
                batch = batch[:, :, top : top + ch, :]
            out[idx] = batch
        mean = torch.as_tensor(self.mean, dtype=out.dtype, device=device).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=out.dtype, device=device).view(-1, 1, 1)
        out = out.div_(255).sub_(mean).div_(std)
        return out if dtype is None else out.to(dtype)
