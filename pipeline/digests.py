"""sha256 digests: the one hash of lineage (blobs, weights, LoRA pins, catalog files)."""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 20  # weight files run to gigabytes: hash them in 1 MiB reads, never whole


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()
