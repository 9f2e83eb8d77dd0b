"""The ``asset_renditions`` rows: written at publish, read by lineage, verify and exports."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from catalog.models import Asset, AssetRendition, utcnow
from catalog.shots import _insert_stmt

RENDITION_FIELDS = (
    "channel",
    "name",
    "backend",
    "bucket",
    "key",
    "sha256",
    "size_bytes",
    "content_type",
    "width",
    "height",
    "quality",
    "watermark_verified",
    "bit_accuracy",
    "xmp_ai_tag",
    "icc_srgb",
)


def record_renditions(session: Session, by_shot: Mapping[int, Sequence[Mapping[str, Any]]]) -> int:
    """One row per rendition of each shot's asset (``RENDITION_FIELDS``), in one statement;
    a redelivered publish writes nothing twice (unique asset, channel, name)."""
    if not any(by_shot.values()):
        return 0
    assets = dict(
        session.execute(
            select(Asset.shot_id, Asset.id).where(Asset.shot_id.in_(list(by_shot)))
        ).all()
    )
    now = utcnow()
    rows = [
        {"asset_id": assets[sid], "shot_id": sid, "created_at": now, **dict(r)}
        for sid, rends in by_shot.items()
        if sid in assets
        for r in rends
    ]
    if rows:
        session.execute(_insert_stmt(session, AssetRendition), rows)
    return len(rows)


def renditions_of(session: Session, asset_ids: Sequence[int]) -> dict[int, list[AssetRendition]]:
    """Each asset's renditions, by channel then name."""
    out: dict[int, list[AssetRendition]] = {a: [] for a in asset_ids}
    rows = session.scalars(
        select(AssetRendition)
        .where(AssetRendition.asset_id.in_(list(asset_ids)))
        .order_by(AssetRendition.asset_id, AssetRendition.channel, AssetRendition.name)
    )
    for r in rows:
        out[r.asset_id].append(r)
    return out


def rendition_by_sha(session: Session, sha256: str) -> AssetRendition | None:
    """The rendition whose bytes have ``sha256`` (what ``verify`` reads a file back to)."""
    return session.scalars(
        select(AssetRendition).where(AssetRendition.sha256 == sha256).limit(1)
    ).first()


def rendition_json(r: AssetRendition) -> dict[str, Any]:
    return {f: getattr(r, f) for f in RENDITION_FIELDS} | {"asset_id": r.asset_id}
