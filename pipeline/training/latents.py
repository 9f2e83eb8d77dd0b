"""Where a run keeps its encoded images: one safetensors file per image (and per caption).

A training set can be larger than memory, so the trainer encodes an image through the VAE
the first time a step draws it and keeps the result here, keyed by what determines it (the
file's sha256, the training size, the weight dtype). A resumed run finds what it encoded
before. Files are written atomically, so a crash never leaves half a latent; one that does
not load is encoded again. Without a folder the cache is a dict (tests, benchmarks).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.files import atomic_write_via

log = logging.getLogger(__name__)


class LatentCache:
    def __init__(self, folder: Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else None
        self._memory: dict[str, dict[str, Any]] = {}

    def _path(self, key: str) -> Path:
        assert self.folder is not None
        return self.folder / f"{key}.safetensors"

    def get(self, key: str) -> dict[str, Any] | None:
        if self.folder is None:
            return self._memory.get(key)
        path = self._path(key)
        if not path.is_file():
            return None
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # a damaged cache file is worth no more than a miss
            log.warning("%s: unreadable cached latent (%s); encoding again", path, exc)
            return None

    def put(self, key: str, tensors: dict[str, Any]) -> None:
        if self.folder is None:
            self._memory[key] = tensors
            return
        from safetensors.torch import save_file

        tensors = {k: v.contiguous() for k, v in tensors.items()}
        atomic_write_via(self._path(key), lambda tmp: save_file(tensors, str(tmp)))

    def __len__(self) -> int:
        if self.folder is None:
            return len(self._memory)
        return sum(1 for _ in self.folder.glob("*.safetensors")) if self.folder.is_dir() else 0
