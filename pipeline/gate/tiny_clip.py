"""The offline ``tiny`` CLIP preset: a small random-weight open_clip model.

No machine here can download weights. The tiny preset registers a small open_clip config
(ViT 2 layers x 64 wide, patch 16 at 64 px; text 2 layers x 64 wide with the real CLIP BPE
vocabulary), initialises it with a fixed seed, saves the state dict as ``.safetensors`` under
``settings.model_cache_dir/tiny-clip`` and loads it back through the same
``open_clip.create_model_and_transforms(name, pretrained=<checkpoint>)`` call production uses.

Its scores are meaningless: it exercises the gate, it does not judge images.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.files import atomic_write_bytes, atomic_write_via

TINY_CLIP_NAME = "shotline-tiny-clip"
TINY_CLIP_DIRNAME = "tiny-clip"
TINY_CLIP_SEED = 20240601
# Bump when the config below changes, so stale caches are rebuilt rather than reused.
TINY_CLIP_VERSION = "1"
CHECKPOINT_NAME = "open_clip_model.safetensors"
_MARKER = "shotline_tiny_clip.json"

TINY_CLIP_CONFIG: dict[str, object] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {
        "context_length": 77,
        "vocab_size": 49408,
        "width": 64,
        "heads": 2,
        "layers": 2,
    },
}


def tiny_clip_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / TINY_CLIP_DIRNAME


def register_tiny_config(cache_dir: Path) -> Path:
    """Write the config JSON and register it with open_clip (once per process)."""
    import open_clip

    folder = tiny_clip_dir(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    cfg_path = folder / f"{TINY_CLIP_NAME}.json"
    text = json.dumps(TINY_CLIP_CONFIG, indent=2, sort_keys=True)
    if not cfg_path.is_file() or cfg_path.read_text() != text:
        # Parallel test processes may build the preset at once: write aside, then rename.
        atomic_write_bytes(cfg_path, text.encode())
    if TINY_CLIP_NAME not in open_clip.list_models():
        open_clip.add_model_config(cfg_path)
    return cfg_path


def _is_complete(folder: Path) -> bool:
    marker = folder / _MARKER
    if not marker.is_file() or not (folder / CHECKPOINT_NAME).is_file():
        return False
    try:
        return bool(json.loads(marker.read_text()).get("version") == TINY_CLIP_VERSION)
    except ValueError:
        return False


def ensure_tiny_clip(cache_dir: Path) -> Path:
    """Build the tiny checkpoint once; return the path of its ``.safetensors`` file."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    register_tiny_config(cache_dir)
    folder = tiny_clip_dir(cache_dir)
    checkpoint = folder / CHECKPOINT_NAME
    if _is_complete(folder):
        return checkpoint
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_CLIP_SEED)
        model = open_clip.create_model(TINY_CLIP_NAME, pretrained=None)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {"format": "pt", "shotline": "tiny-clip random weights"}
    atomic_write_via(checkpoint, lambda tmp: save_file(state, str(tmp), metadata=meta))
    marker = {"version": TINY_CLIP_VERSION, "seed": TINY_CLIP_SEED, "config": TINY_CLIP_CONFIG}
    atomic_write_bytes(folder / _MARKER, json.dumps(marker, indent=2).encode())
    return checkpoint
