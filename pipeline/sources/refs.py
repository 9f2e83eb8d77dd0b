"""Image references as the catalog writes them -> one canonical URL string.

A relative path is resolved against the catalog file's location (as a browser resolves a
relative link against its page): its folder, giving a ``file://`` URL, or, for a catalog that
was fetched from ``s3://`` or ``http(s)://`` (scheduled ingestion), the URL's folder, giving
a URL next to it; ``http(s)://``, ``s3://`` and ``file://`` stay as they are. Anything else
is kept verbatim: the fetch step refuses it with its reason, so a bad reference never stops
an import or a plan.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote, urlsplit

MAX_REF_CHARS = 2048
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")
SCHEMES = ("http", "https", "s3", "file")


def ref_base(location: str) -> Path | str:
    """What relative references in the catalog at ``location`` resolve against: the folder
    of a local file, or the folder URL (ending in "/") of a catalog at a URL."""
    if _SCHEME.match(location) and not _WINDOWS_DRIVE.match(location):
        if location.lower().startswith("file:"):
            return file_path(location).parent
        return location.rsplit("/", 1)[0] + "/"
    return Path(location).parent


def _join_url(base: str, ref: str) -> str:
    """``ref`` (relative, with "/" or "\\" separators) under the folder URL ``base``."""
    parts = urlsplit(base)
    rel = ref.replace("\\", "/")
    path = posixpath.normpath(posixpath.join(parts.path or "/", rel))
    if parts.scheme.lower() in ("http", "https"):
        path = quote(path, safe="/:@!$&'()*+,;=-._~")
    return f"{parts.scheme.lower()}://{parts.netloc}{path}"


def normalize_ref(raw: str, base_dir: Path | str | None) -> str | None:
    """The URL for ``raw`` (None for an empty or over-long cell). ``base_dir``: what a
    relative reference resolves against (``ref_base`` of the catalog's location)."""
    ref = raw.strip()
    if not ref or len(ref) > MAX_REF_CHARS:
        return None
    if _SCHEME.match(ref) and not _WINDOWS_DRIVE.match(ref):
        scheme, _, rest = ref.partition(":")
        return f"{scheme.lower()}:{rest}"
    if isinstance(base_dir, str) and not Path(ref).is_absolute():
        return _join_url(base_dir, ref)
    base_dir = base_dir if isinstance(base_dir, Path) else None
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
