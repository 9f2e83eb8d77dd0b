"""The delivery part of a shot's lineage: its asset's renditions, whether it is current,
superseded or recalled (when, by whom, why), and what a file's bytes are a rendition of."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from catalog.delivery.current import asset_statuses
from catalog.delivery.renditions import rendition_by_sha, rendition_json, renditions_of
from catalog.models import Asset


def delivery_json(session: Session, asset: Asset | None) -> dict[str, Any] | None:
    """Renditions and status of a published asset (None when the shot has none)."""
    if asset is None:
        return None
    status = asset_statuses(session, [asset.id]).get(asset.id)
    rends = renditions_of(session, [asset.id])[asset.id]
    return {
        **(status.to_json() if status else {}),
        "renditions": [rendition_json(r) for r in rends],
    }


def file_facts(session: Session, sha256: str) -> dict[str, Any]:
    """What the catalog knows about a file from its bytes' sha256: the rendition it is (if
    any) and its asset's recall."""
    rend = rendition_by_sha(session, sha256)
    asset_id = rend.asset_id if rend else None
    if asset_id is None:
        asset_id = session.scalar(select(Asset.id).where(Asset.sha256 == sha256).limit(1))
    status = asset_statuses(session, [asset_id]).get(asset_id) if asset_id else None
    return {
        "rendition": None if rend is None else rendition_json(rend),
        "asset_id": asset_id,
        "asset_status": None if status is None else status.status,
        "recalled": None if status is None or status.recall is None else status.recall.to_json(),
    }
