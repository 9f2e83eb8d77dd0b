"""Brand rows: one per brand name, carrying the digest and version of its YAML config."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from catalog.models import Brand
from pipeline.brand.config import BrandConfig


def upsert_brand(session: Session, cfg: BrandConfig) -> Brand:
    """Create or update the brand row; bump ``version`` only when the config digest changes."""
    digest = cfg.digest()
    brand = session.scalar(select(Brand).where(Brand.name == cfg.name))
    if brand is None:
        brand = Brand(name=cfg.name, config_digest=digest, version=1, config=cfg.to_json())
        session.add(brand)
        session.flush()
    elif brand.config_digest != digest:
        brand.config_digest = digest
        brand.version += 1
        brand.config = cfg.to_json()
        session.flush()
    return brand


def get_brand(session: Session, name: str) -> Brand | None:
    return session.scalar(select(Brand).where(Brand.name == name))


def all_brands(session: Session) -> list[tuple[int, str, dict[str, Any]]]:
    """(id, name, stored config) of every brand, by id."""
    rows = session.execute(select(Brand.id, Brand.name, Brand.config).order_by(Brand.id))
    return [(bid, name, dict(config or {})) for bid, name, config in rows.all()]
