"""sha256 digests: the one hash of lineage (blobs, weights, LoRA pins, catalog files)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pipeline.files import iter_chunks


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, what: str = "file") -> str:
    """Weight files run to gigabytes: hashed in 1 MiB reads, never whole. Only regular
    files are read (a FIFO would block forever): others raise ``InputFileError``."""
    h = hashlib.sha256()
    for chunk in iter_chunks(path, what):
        h.update(chunk)
    return h.hexdigest()
