"""384-px WebP thumbnails for the queue, made once per image and served from a disk cache.

Blob keys are content-addressed (they carry the image's sha256), so a key names one image
for ever and its thumbnail never needs invalidating. The cache file is written atomically:
two requests making the same thumbnail at once both write the same bytes.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

from pipeline.files import atomic_write_bytes
from pipeline.images import ImageError, decode_image

THUMB_PX = 384
THUMB_DIR = "thumbs"


class ThumbCache:
    """Thumbnails under ``var_dir/thumbs``; ``made`` counts the ones this process generated."""

    def __init__(self, var_dir: Path, size: int = THUMB_PX) -> None:
        self.folder = var_dir / THUMB_DIR
        self.size = size
        self.made = 0

    def path(self, key: str) -> Path:
        name = hashlib.sha256(f"{self.size}:{key}".encode()).hexdigest()
        return self.folder / name[:2] / f"{name}.webp"

    def get(self, store: Any, key: str) -> bytes | None:
        """The thumbnail of the blob ``key``; None when the blob is missing or unreadable."""
        path = self.path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            pass
        try:
            data = bytes(store.get(key))
        except Exception:  # a missing blob shows as "no image", never a traceback
            return None
        try:
            image = decode_image(data, f"blob {key}")
        except ImageError:
            return None
        image.thumbnail((self.size, self.size))
        buf = io.BytesIO()
        image.save(buf, format="WEBP", quality=80, method=4)
        thumb = buf.getvalue()
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, thumb)
        self.made += 1
        return thumb
