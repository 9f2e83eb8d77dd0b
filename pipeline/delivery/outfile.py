"""Export files written whole or not at all: a temp file beside the target, renamed over it.

A reader (Shopify's importer, Merchant Center's scheduled fetch, a person) never sees half a
file, and a failed export leaves the previous file as it was.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from pipeline.files import atomic_path
from pipeline.outputs import (  # the one error and checks for a refused --out target
    OutputPathError,
    check_output_file,
    check_output_folder,
)

__all__ = ["OutputPathError", "atomic_text", "check_output_path"]


def check_output_path(path: Path) -> Path:
    """``path`` if a regular file may be written there (absent or a regular file, not a link,
    in a writable folder); ``OutputPathError`` otherwise. The same checks as every other
    ``--out`` target (``pipeline.outputs``), plus the folder."""
    return check_output_folder(check_output_file(path))


@contextmanager
def atomic_text(path: Path, newline: str = "") -> Iterator[TextIO]:
    """Write through a temp file in the target's folder (``pipeline.files.atomic_path``, the
    one temp-and-rename helper); renamed over ``path`` on success, removed on any error."""
    check_output_path(path)
    umask = os.umask(0)
    os.umask(umask)
    try:
        # The mode: what a plain open() would have made.
        with (
            atomic_path(path, mode=0o666 & ~umask) as tmp,
            tmp.open("w", encoding="utf-8", newline=newline) as fh,
        ):
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
    except PermissionError as exc:
        raise OutputPathError(f"{path}: cannot write: {exc.strerror or exc}") from None
