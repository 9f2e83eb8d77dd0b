"""Every blob key the line writes, in one place. The bucket's layout::

    sources/<sha[:2]>/<sha256>                          catalog images as fetched
    masks/<sha[:2]>/<sha256>.png                        packshot cutouts and placed canvases
    raw/<brand>/<sku>/<template>/<sha256>.png           raw generations (``store_raw`` only)
    final/<brand>/<sku>/<template>/<sha256>.<ext>       gated files: watermark + provenance
    <brand>/<sku>/<template>/<sha256>.<ext>             published masters

Every part a catalog controls is sanitized (``pipeline.storage.content_key``); the rest is
content-addressed, so the same bytes are stored once and a key never changes meaning.
"""

from __future__ import annotations

from pipeline.storage import content_key


def source_key(sha256: str) -> str:
    """A source image's bytes (shared by every URL that serves them)."""
    return f"sources/{sha256[:2]}/{sha256}"


def mask_key(sha256: str) -> str:
    """A cutout mask or placed canvas (PNG): the same cutout is stored once."""
    return f"masks/{sha256[:2]}/{sha256}.png"


def raw_key(brand: str, sku: str, template: str, sha256: str) -> str:
    return content_key("raw", brand, sku, template, sha256=sha256, ext="png")


def final_key(brand: str, sku: str, template: str, sha256: str, ext: str) -> str:
    return content_key("final", brand, sku, template, sha256=sha256, ext=ext)


def published_key(brand: str, sku: str, template: str, sha256: str, ext: str) -> str:
    return content_key(brand, sku, template, sha256=sha256, ext=ext)
