"""Files the CLI writes where the user points (``--out``): a temp file beside the target,
then a rename, and never through a symlink or into a FIFO or device.

Writing to the named path directly follows a symlink planted there (overwriting whatever it
points to) and blocks forever on a FIFO. The target is checked with ``lstat`` (the link
itself, not what it names), and the bytes go through ``pipeline.files.atomic_write_via``: a
fresh exclusive temp file in the same folder (it cannot be a planted link), swapped in
atomically.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from pipeline.files import atomic_write_via


class OutputPathError(ValueError):
    """A ``--out`` target that is refused: ``str()`` names the path and the reason."""


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_output_file(path: Path) -> Path:
    """``path`` if it is absent or a regular file (not a link to one)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    except OSError as exc:  # a folder on the way that can't be searched, a name too long
        raise OutputPathError(f"{path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise OutputPathError(f"{path}: is a folder; give a file name")
    if not stat.S_ISREG(st.st_mode):
        raise OutputPathError(f"{path}: is {_kind(st.st_mode)}; refusing to write through it")
    return path


def check_output_folder(path: Path) -> Path:
    """``path`` if its folder exists and may be written (checked up front, before an export
    spends minutes on rows it could not write)."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputPathError(f"{path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"{path}: folder {parent} is not writable")
    return path


def check_output_dir(path: Path) -> Path:
    """``path`` if it is absent or a real folder (a symlinked folder is refused)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    if not stat.S_ISDIR(st.st_mode):
        raise OutputPathError(f"{path}: is {_kind(st.st_mode)}, not a folder; refusing to write")
    return path


def write_output(path: Path, fill: Callable[[Path], None]) -> None:
    """Check ``path``, have ``fill`` write a temp file beside it, rename it over ``path``."""
    check_output_file(Path(path))
    atomic_write_via(Path(path), fill)


def write_output_bytes(path: Path, data: bytes) -> None:
    def fill(tmp: Path) -> None:
        tmp.write_bytes(data)

    write_output(path, fill)
