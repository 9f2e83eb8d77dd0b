"""An optional ControlNet for packshot shots: the placed packshot's edges condition the scene.

A brand names a local ``.safetensors`` ControlNet (``controlnet:`` in its YAML, or
``tiny-controlnet``, the offline preset's). Planning records on each packshot shot what it
will be generated with (``ControlSpec``: the resolved file, its sha256, the kind and its
parameters); the worker loads that file once, checks the sha256 against the record before
using it (a file swapped after planning fails its shots, it is not used), and the inpainter
runs diffusers' ControlNet inpainting pipeline (``AutoPipelineForInpainting.from_pipe`` with
``controlnet=``, sharing the loaded UNet, VAE and text encoder) with the canny edges of the
placed packshot as the control image. Only ``canny`` is built: a depth control would need a
depth estimator, and none ships offline.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from pipeline.digests import sha256_file
from pipeline.files import InputFileError
from pipeline.generate.modelspec import ModelLoadError, cached_sha256
from pipeline.weights import check_safetensors

if TYPE_CHECKING:
    from pipeline.settings import Settings

TINY_CONTROLNET = "tiny-controlnet"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


@dataclass(frozen=True)
class ControlSpec:
    """What a packshot shot is conditioned with, as recorded at plan time."""

    path: str  # the resolved .safetensors file
    sha256: str
    kind: str = "canny"
    scale: float = 0.8
    canny_low: int = 100
    canny_high: int = 200

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ControlSpec | None:
        if not data:
            return None
        return cls(
            path=str(data["path"]),
            sha256=str(data["sha256"]),
            kind=str(data.get("kind", "canny")),
            scale=float(data.get("scale", 0.8)),
            canny_low=int(data.get("canny_low", 100)),
            canny_high=int(data.get("canny_high", 200)),
        )

    def key(self) -> str:
        """Shots with equal keys can share one ControlNet batch."""
        return json.dumps(self.to_json(), sort_keys=True)


def controlnet_file(path: str, settings: Settings) -> Path:
    """The weights file a brand's ``controlnet.path`` names (the tiny preset's is built once)."""
    if path == TINY_CONTROLNET:
        from pipeline.generate.tiny_preset import ensure_tiny_controlnet

        return ensure_tiny_controlnet(settings.model_cache_dir) / WEIGHTS_NAME
    return Path(path)


def plan_spec(
    path: str, pin: str | None, params: dict[str, Any], settings: Settings
) -> ControlSpec:
    """The spec a packshot shot records (``ModelLoadError`` naming the file when it is missing,
    not well-formed safetensors, or not the pinned file)."""
    file = controlnet_file(path, settings)
    try:
        check_safetensors(file, "ControlNet")
    except InputFileError as exc:
        raise ModelLoadError(str(exc)) from None
    sha = cached_sha256(file, settings)  # every plan checks it: hashed once per file version
    if pin and pin != sha:
        raise ModelLoadError(f"ControlNet {file}: sha256 {sha} does not match the pin {pin}")
    return ControlSpec(path=str(file), sha256=sha, **params)


def load_controlnet(spec: ControlSpec, device: Any, dtype: Any) -> Any:
    """The ControlNet ``spec`` names, after checking its file is the one the shot recorded.

    A file in the diffusers layout (``config.json`` beside it) is built from that config and
    its state dict; any other file goes through diffusers' single-file loader, offline."""
    from diffusers import ControlNetModel
    from safetensors.torch import load_file

    file = Path(spec.path)
    try:
        check_safetensors(file, "ControlNet")
    except InputFileError as exc:
        raise ModelLoadError(str(exc)) from None
    sha = sha256_file(file, "ControlNet")
    if sha != spec.sha256:
        raise ModelLoadError(
            f"ControlNet {file}: sha256 {sha} is not the {spec.sha256} the shot was planned with"
        )
    config = file.parent / "config.json"
    try:
        if config.is_file():
            model = ControlNetModel.from_config(ControlNetModel.load_config(str(file.parent)))
            model.load_state_dict(load_file(str(file)))
        else:
            model = ControlNetModel.from_single_file(str(file), local_files_only=True)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelLoadError(
            f"ControlNet {file}: cannot load ({type(exc).__name__}: {exc}); a diffusers-layout "
            "file needs its config.json in the same folder"
        ) from None
    return model.to(device=device, dtype=dtype).eval()


def control_image(rgb: np.ndarray, spec: ControlSpec) -> Image.Image:
    """The control image for a placed packshot canvas: its canny edges, white on black."""
    import cv2

    grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    edges = cv2.Canny(grey, spec.canny_low, spec.canny_high)
    return Image.fromarray(np.stack([edges] * 3, axis=-1))
