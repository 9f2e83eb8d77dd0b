"""Lineage of packshot shots: the catalog image a shot's product pixels came from, and the
reverse, from a source image URL or sha256 to every shot and asset made from it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from catalog.models import Product, ProductRevision, Shot, SourceImage
from catalog.packshots.sources import find_sources


class UnknownSource(LookupError):
    """No source image has this URL or sha256."""


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def source_json(src: SourceImage) -> dict[str, Any]:
    return {
        "id": src.id,
        "url": src.url,
        "status": src.status,
        "sha256": src.sha256,
        "bytes": src.size_bytes,
        "width": src.width,
        "height": src.height,
        "content_type": src.content_type,
        "etag": src.etag,
        "last_modified": src.last_modified,
        "fetched_at": _iso(src.fetched_at),
        "blob_backend": src.blob_backend,
        "blob_key": src.blob_key,
        "error": src.error,
        "decode": src.details or {},
    }


def packshot_json(session: Session, shot: Shot) -> dict[str, Any] | None:
    """The packshot part of a shot's chain (None for a text-to-image shot)."""
    if shot.source_image_id is None:
        return None
    src = session.get(SourceImage, shot.source_image_id)
    info = dict(shot.packshot or {})
    return {
        "source_image": source_json(src) if src is not None else None,
        "image": info.get("image"),
        "placement": info.get("placement"),
        "cutout": info.get("cutout"),
        "controlnet": info.get("controlnet"),
    }


def outputs_of_source(session: Session, ref: str) -> dict[str, Any]:
    """Every shot (and its asset, once published) made from the source image(s) ``ref``
    names (a URL as imported, or the content sha256), and the revisions that name it."""
    sources = find_sources(session, ref)
    if not sources:
        raise UnknownSource(f"{ref}: no source image has this URL or sha256")
    ids = [s.id for s in sources]
    shots = session.scalars(
        select(Shot)
        .where(Shot.source_image_id.in_(ids))
        .options(selectinload(Shot.asset), selectinload(Shot.product_revision))
        .order_by(Shot.id)
    ).all()
    keys = dict(
        session.execute(
            select(ProductRevision.id, Product.sku)
            .join(Product, Product.id == ProductRevision.product_id)
            .where(ProductRevision.id.in_({s.product_revision_id for s in shots}))
        ).all()
    )
    return {
        "ref": ref,
        "sources": [source_json(s) for s in sources],
        "shots": [
            {
                "shot_id": s.id,
                "state": s.state,
                "product_key": keys.get(s.product_revision_id),
                "template": s.template_name,
                "source_image_id": s.source_image_id,
                "mask_sha256": (s.packshot or {}).get("cutout", {}).get("mask_sha256"),
                "asset_id": s.asset.id if s.asset else None,
                "asset_key": s.asset.key if s.asset else None,
                "asset_sha256": s.asset.sha256 if s.asset else None,
            }
            for s in shots
        ],
    }
