"""Image references as the catalog writes them -> one canonical URL string.

A relative path is resolved against the catalog file's folder (as a browser resolves a
relative link against its page) and becomes a ``file://`` URL; ``http(s)://``, ``s3://`` and
``file://`` stay as they are. Anything else is kept verbatim: the fetch step refuses it with
its reason, so a bad reference never stops an import or a plan.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote, urlsplit

MAX_REF_CHARS = 2048
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")
SCHEMES = ("http", "https", "s3", "file")


def normalize_ref(raw: str, base_dir: Path | None) -> str | None:
    """The URL for ``raw`` (None for an empty or over-long cell)."""
    ref = raw.strip()
    if not ref or len(ref) > MAX_REF_CHARS:
        return None
    if _SCHEME.match(ref) and not _WINDOWS_DRIVE.match(ref):
        scheme, _, rest = ref.partition(":")
        return f"{scheme.lower()}:{rest}"
    path = Path(ref)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return "file://" + quote(str(path.absolute()), safe="/:@!$&'()*+,;=-._~")


def url_digest(url: str) -> str:
    """The key of a ``source_images`` row (URLs are too long to index as text)."""
    return hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()


def file_path(url: str) -> Path:
    """The local path of a ``file://`` URL (``file:///a/b`` or ``file://localhost/a/b``)."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"{url}: file URL names a remote host {parts.netloc!r}")
    return Path(unquote(parts.path))


def display_name(url: str) -> str:
    """A short name for messages and contact sheets: the last path segment."""
    return PurePosixPath(urlsplit(url).path).name or url
