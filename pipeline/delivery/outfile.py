"""Export files written whole or not at all: a temp file beside the target, renamed over it.

A reader (Shopify's importer, Merchant Center's scheduled fetch, a person) never sees half a
file, and a failed export leaves the previous file as it was.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from pipeline.files import atomic_path
from pipeline.outputs import OutputPathError  # the one error for a refused --out target

__all__ = ["OutputPathError", "atomic_text", "check_output_path"]


def check_output_path(path: Path) -> Path:
    """``path`` if a regular file may be written there; ``OutputPathError`` otherwise."""
    try:
        st = path.stat()
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise OutputPathError(f"{path}: {exc.strerror or exc}") from None
    try:
        if stat.S_ISLNK(os.lstat(path).st_mode):
            raise OutputPathError(f"{path}: is a symlink; refusing to write through it")
    except FileNotFoundError:
        pass
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise OutputPathError(f"{path}: is a directory; give a file name")
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise OutputPathError(f"{path}: is not a regular file (a FIFO, device or socket)")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputPathError(f"{path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"{path}: folder {parent} is not writable")
    return path


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
