"""Stable public URLs: ``SHOTLINE_PUBLIC_BASE_URL`` + the object key, percent-encoded.

A key is content-addressed, so its URL names the same bytes forever: no timestamps, no
presigned query strings (a feed fetched next week must still resolve). Keys are encoded per
RFC 3986 (path characters only; commas and spaces too, since feeds separate URLs with them).
"""

from __future__ import annotations

from urllib.parse import quote, unquote, urlsplit, urlunsplit

# Unreserved characters plus the path separator: everything else is percent-encoded.
_SAFE = "/-._~"


class PublicUrlError(ValueError):
    """No usable public base URL: the one line says what to set."""


def check_base_url(base: str | None) -> str:
    """The base URL, normalized to end in ``/``; ``PublicUrlError`` when unusable."""
    if not base:
        raise PublicUrlError(
            "SHOTLINE_PUBLIC_BASE_URL is not set: set it to the public address of the blob "
            "store (a CDN or bucket website), e.g. https://cdn.example.com/shotline/"
        )
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise PublicUrlError(
            f"SHOTLINE_PUBLIC_BASE_URL={base!r} needs an http(s) scheme and a host, "
            "e.g. https://cdn.example.com/shotline/"
        )
    if parts.query or parts.fragment:
        raise PublicUrlError(
            f"SHOTLINE_PUBLIC_BASE_URL={base!r} must not carry a query or fragment: "
            "feed URLs must be stable"
        )
    # The base's own path is encoded too (a space in a folder name); "%" stays: already encoded.
    path = quote(parts.path, safe=_SAFE + "%")
    base = urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    return base if base.endswith("/") else base + "/"


def public_url(base: str, key: str) -> str:
    """``base`` (from ``check_base_url``) + the percent-encoded ``key``."""
    return base + quote(key.lstrip("/"), safe=_SAFE)


def key_of(base: str, url: str) -> str | None:
    """The object key a URL made by ``public_url`` names (None when it is not under base)."""
    return unquote(url[len(base) :]) if url.startswith(base) else None
