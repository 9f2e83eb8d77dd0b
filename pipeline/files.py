"""Files in and out: atomic writes, and bounded reads of files a user names.

Writes go to a temp file in the target's folder and are renamed over it (``os.replace`` is
atomic on POSIX): a reader sees the old file or the new one, never half of one, and a
crash leaves at most a ``.tmp-*`` file behind. Folders are published the same way.

Reads of user-named files never block and never read without bound: the path must be a
regular file (a FIFO, ``/dev/zero`` or a socket is refused before it is opened), and at
most ``max_bytes + 1`` bytes are read. Problems raise ``InputFileError`` (a ``ValueError``:
a bad input, never worth a retry) whose message names the file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

_TMP_PREFIX = ".tmp-"
_CHUNK = 1 << 20


class InputFileError(ValueError):
    """A file that cannot be used: missing, not a regular file, too large, unreadable."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


# --- writing -----------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path: Path, mode: int | None = None) -> Iterator[Path]:
    """A temp file beside ``path`` for the block to fill; renamed over ``path`` when the block
    ends, removed when it raises. ``mode``: the permissions to give it (``mkstemp`` makes
    0600; an export a person opens wants what a plain ``open()`` would have made)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{_TMP_PREFIX}{path.name}.", suffix=".part")
    os.close(fd)
    try:
        yield Path(tmp)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_via(path: Path, write: Callable[[Path], None]) -> None:
    """Have ``write`` fill a temp file beside ``path``, then rename it over ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` (flushed to disk) or its old content, never a mix."""

    def write(tmp: Path) -> None:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    atomic_write_via(path, write)


def publish_dir(
    target: Path, build: Callable[[Path], None], is_complete: Callable[[Path], bool]
) -> Path:
    """Build a folder aside and rename it to ``target``; safe when processes race.

    A stale or half-written ``target`` is moved aside first. The loser of a race discards
    its copy and keeps the winner's (``is_complete(target)`` decides).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{target.name}-", dir=target.parent))
    try:
        build(tmp)
        if target.exists() and not is_complete(target):
            stale = Path(
                tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{target.name}-stale-", dir=target.parent)
            )
            # If someone else moved it already, the rename below decides.
            with contextlib.suppress(OSError):
                os.replace(target, stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            if not is_complete(target):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


# --- reading -----------------------------------------------------------------------------


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n} bytes"


def regular_file(path: str | os.PathLike[str], max_bytes: int | None, what: str) -> os.stat_result:
    """``path``'s stat if it is a regular file of at most ``max_bytes``; else InputFileError."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputFileError(path, f"{what}: file not found") from None
    except OSError as exc:
        raise InputFileError(path, f"{what}: unreadable: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputFileError(path, f"{what}: is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise InputFileError(path, f"{what}: not a regular file (a pipe, device or socket)")
    if max_bytes is not None and st.st_size > max_bytes:
        raise InputFileError(
            path, f"{what}: file is {_mib(st.st_size)}; the limit is {_mib(max_bytes)}"
        )
    return st


@contextlib.contextmanager
def open_regular(
    path: str | os.PathLike[str], max_bytes: int | None = None, what: str = "file"
) -> Iterator[BinaryIO]:
    """Open a regular file for reading; never blocks (a FIFO swapped in after the check is
    opened non-blocking and refused by ``fstat``)."""
    regular_file(path, max_bytes, what)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise InputFileError(path, f"{what}: unreadable: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InputFileError(path, f"{what}: not a regular file (a pipe, device or socket)")
    with os.fdopen(fd, "rb") as fh:
        yield fh


def read_capped(path: str | os.PathLike[str], max_bytes: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (reads at most one byte more,
    so a file that grows after the size check is still refused)."""
    with open_regular(path, max_bytes, what) as fh:
        try:
            data = fh.read(max_bytes + 1)
        except OSError as exc:
            raise InputFileError(path, f"{what}: unreadable: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise InputFileError(path, f"{what}: file is over the limit of {_mib(max_bytes)}")
    return data


def read_text_capped(path: str | os.PathLike[str], max_bytes: int, what: str = "file") -> str:
    """``read_capped`` decoded as UTF-8 (a decoding problem is an ``InputFileError`` too)."""
    data = read_capped(path, max_bytes, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputFileError(
            path, f"{what}: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None


def iter_chunks(path: str | os.PathLike[str], what: str = "file") -> Iterator[bytes]:
    """A regular file's bytes in 1 MiB chunks (for hashing files of any size)."""
    with open_regular(path, None, what) as fh:
        while chunk := fh.read(_CHUNK):
            yield chunk
