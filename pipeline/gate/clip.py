"""open_clip loading: the production path for the gate's CLIP (the tiny preset goes through it
too). Only ``.safetensors`` checkpoints are loaded."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from PIL import Image

from pipeline.digests import sha256_file
from pipeline.gate.clip_preprocess import TensorClipPreprocess, pil_to_pixels
from pipeline.gate.policy import GateModelError

if TYPE_CHECKING:
    from pipeline.settings import Settings


class ImageTextEncoder(Protocol):
    """What the filter needs from CLIP. Rows are L2-normalised float32 embeddings."""

    name: str

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray: ...


class OpenClipEncoder:
    """An open_clip model + its eval transform + tokenizer behind ``ImageTextEncoder``.

    ``encode_pixels`` takes uint8 (3, H, W) tensors on any device (the GPU host's decoded
    images); ``encode_images`` turns PIL images into those tensors and calls it, so both
    give the same embedding for the same pixels.
    """

    def __init__(
        self,
        model: Any,
        preprocess: Any,
        tokenizer: Any,
        name: str,
        device: str = "cpu",
        batch_size: int = 64,
    ) -> None:
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.name = name
        self.device = device
        self.batch_size = batch_size
        first = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
        self.dtype = None if first is None else first.dtype  # fp16 on CUDA (load_open_clip)
        # The stock transform in torch; None for a non-standard transform (then per image).
        self.tensor_preprocess = TensorClipPreprocess.from_transform(preprocess)

    def _batch(self, pixels: Sequence[Any]) -> Any:
        import torch
        from torchvision.transforms.functional import to_pil_image

        if self.tensor_preprocess is not None:
            try:
                return self.tensor_preprocess(pixels, device=self.device, dtype=self.dtype)
            except ValueError:  # an image the stock transform pads: let it do so
                pass
        stock = [self.preprocess(to_pil_image(p.cpu())) for p in pixels]
        return torch.stack(stock).to(self.device, dtype=self.dtype)

    def encode_pixels(self, pixels: Sequence[Any]) -> np.ndarray:
        """L2-normalised float32 embeddings of uint8 (3, H, W) tensors (any device)."""
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(pixels), self.batch_size):
                batch = self._batch(pixels[i : i + self.batch_size])
                feats = self.model.encode_image(batch)
                out.append(torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.encode_pixels([pil_to_pixels(im) for im in images])

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            tokens = self.tokenizer(list(texts)).to(self.device)
            feats = self.model.encode_text(tokens)
            return torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy()


def _looks_like_path(pretrained: str) -> bool:
    return "/" in pretrained or "\\" in pretrained or Path(pretrained).suffix != ""


def load_open_clip(
    model_name: str, pretrained: str | None, device: str = "cpu", cache_dir: Path | None = None
) -> OpenClipEncoder:
    """Load an open_clip architecture with a pretrained tag or a local ``.safetensors``
    checkpoint. Pickle checkpoints (.pt/.bin/.ckpt/.pth) are refused: loading them runs code."""
    import open_clip

    if pretrained and _looks_like_path(pretrained):
        path = Path(pretrained)
        if path.suffix != ".safetensors":
            raise GateModelError(
                f"CLIP checkpoint {path}: only .safetensors files are accepted "
                "(pickle formats can run code when loaded)"
            )
        if not path.is_file():
            raise GateModelError(f"CLIP checkpoint {path}: file not found")
    if model_name not in open_clip.list_models():
        raise GateModelError(f"unknown open_clip architecture {model_name!r}")
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name,
            pretrained=pretrained,
            device=device,
            # Half precision on a GPU: the gate runs next to the diffusion model there, and
            # its scores are cosine similarities compared with thresholds of two decimals.
            precision="fp16" if str(device).startswith("cuda") else "fp32",
            cache_dir=str(cache_dir) if cache_dir else None,
        )
    except (RuntimeError, ValueError, OSError) as exc:
        raise GateModelError(f"cannot load CLIP {model_name!r} ({pretrained}): {exc}") from None
    tokenizer = open_clip.get_tokenizer(model_name)
    label = f"{model_name}:{_checkpoint_id(pretrained)}"
    return OpenClipEncoder(model, preprocess, tokenizer, label, device=device)


def _checkpoint_id(pretrained: str | None) -> str:
    """How the model id names its weights: a local file by name and sha256 (hashed once per
    worker, in 1 MiB reads), an open_clip tag by the tag (it names one published file)."""
    if not pretrained:
        return "random"
    if _looks_like_path(pretrained):
        path = Path(pretrained)
        return f"{path.name}@{sha256_file(path, 'CLIP checkpoint')[:16]}"
    return pretrained


def load_clip_encoder(settings: Settings) -> OpenClipEncoder:
    """The CLIP encoder named by settings; ``clip_model="tiny"`` builds the offline preset."""
    from pipeline.gate.tiny_clip import TINY_CLIP_NAME, ensure_tiny_clip

    device = "cpu" if settings.device == "auto" else settings.device
    if settings.device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if settings.clip_model == "tiny":
        checkpoint = ensure_tiny_clip(settings.model_cache_dir)
        enc = load_open_clip(TINY_CLIP_NAME, str(checkpoint), device=device)
        # The id names the checkpoint's digest: stored embeddings and scores are only
        # compared with (and re-decided under) the same weights.
        enc.name = f"tiny-clip (random weights)@{sha256_file(checkpoint, 'CLIP checkpoint')[:16]}"
        return enc
    return load_open_clip(
        settings.clip_model,
        settings.clip_pretrained,
        device=device,
        cache_dir=settings.model_cache_dir / "open_clip",
    )
