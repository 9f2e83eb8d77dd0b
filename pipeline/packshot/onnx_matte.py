"""The optional learned matte: a local ONNX segmentation model (BiRefNet, U²-Net...) run with
onnxruntime, for packshots the default method refuses (non-uniform backgrounds).

``SHOTLINE_MATTE_MODEL`` names an ``.onnx`` file used for every opaque packshot; without it, the
pinned U²-Net-p (``pipeline.packshot.matte_models``, ``SHOTLINE_MATTE_FALLBACK``) cuts out the
packshots whose background is not uniform. Weights are never downloaded at run time.

The model contract is the common one for these salient-object models: one float32 NCHW input
in ImageNet normalisation at the model's fixed size (or ``size`` when the input is dynamic),
and a first output whose first channel is the foreground logit or probability.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.digests import sha256_file
from pipeline.packshot.cutout import CutoutError

MAX_MATTE_MODEL_BYTES = 2 << 30  # the largest public BiRefNet exports are under 1 GB
_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_STD = np.array([0.229, 0.224, 0.225], np.float32)


def cpu_session_options(ort: Any) -> Any:
    """One intra-op thread that sleeps when idle. The cpu queue scales by worker processes,
    and onnxruntime's default (a thread per core, spinning between ops) made each cutout
    burn CPU the other processes needed: measured 0.41 -> 0.31 CPU-s per 2048² cutout."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return opts


def load_matte(path: str | Path, size: int = 1024, sha256: str | None = None) -> OnnxMatte:
    """A matte for ``cut_out``; ``CutoutError`` naming the file otherwise (``sha256``: the
    pin the file must match)."""
    p = Path(path).expanduser()
    if p.suffix.lower() != ".onnx":
        raise CutoutError(f"{p}: the learned matte must be a local .onnx model")
    if not p.is_file():
        raise CutoutError(f"{p}: matte model not found (it is never downloaded)")
    if p.stat().st_size > MAX_MATTE_MODEL_BYTES:
        raise CutoutError(f"{p}: matte model is over {MAX_MATTE_MODEL_BYTES >> 20} MB")
    try:
        import onnxruntime as ort
    except ImportError:
        raise CutoutError(
            f"{p}: SHOTLINE_MATTE_MODEL is set but onnxruntime is not installed "
            "(pip install onnxruntime, or unset it to use the default cutout)"
        ) from None
    digest = sha256_file(p)
    if sha256 is not None and digest != sha256:
        raise CutoutError(f"{p}: matte model does not match its sha256 pin {sha256[:12]}…")
    try:
        session = ort.InferenceSession(
            str(p), sess_options=cpu_session_options(ort), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise CutoutError(f"{p}: cannot load the ONNX model: {exc}") from None
    return OnnxMatte(session, size, {"model": p.name, "sha256": digest})


class OnnxMatte:
    """A loaded ONNX matte: ``matte(rgb) -> alpha`` in [0, 1], and what a cutout records
    about it (``info``: the model file's name and sha256)."""

    def __init__(self, session: Any, size: int, info: dict[str, str]) -> None:
        self.info = info
        self.session = session
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        shape = inp.shape
        fixed = len(shape) == 4 and all(isinstance(d, int) for d in shape[2:])
        self.hw = (int(shape[2]), int(shape[3])) if fixed else (size, size)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        x = cv2.resize(rgb, (self.hw[1], self.hw[0]), interpolation=cv2.INTER_AREA)
        x = (x.astype(np.float32) / 255.0 - _MEAN) / _STD
        batch = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
        out = np.asarray(self.session.run(None, {self.input_name: batch})[0], np.float32)
        pred: np.ndarray = out.reshape(out.shape[-2:]) if out.ndim >= 2 else out
        if pred.min() < 0.0 or pred.max() > 1.0:  # logits
            pred = (1.0 / (1.0 + np.exp(-pred))).astype(np.float32)
        return cv2.resize(pred, (w, h), interpolation=cv2.INTER_LINEAR)
