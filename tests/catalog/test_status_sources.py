"""``shotline status`` counts the catalog images packshot shots are made from, by fetch
status, per brand."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from catalog.importing.importer import import_catalog
from catalog.models import SourceImage
from catalog.status import status_report
from pipeline.brand.config import BrandConfig

ROOT = Path(__file__).resolve().parents[2]


def test_status_counts_source_images_by_fetch_status(
    factory: sessionmaker[Session], brand: BrandConfig
) -> None:
    import_catalog(factory, ROOT / "samples" / "catalog.csv", brand)
    with factory.begin() as s:
        ids = list(s.scalars(select(SourceImage.id).order_by(SourceImage.id)))
        assert len(ids) >= 2
        s.execute(update(SourceImage).where(SourceImage.id == ids[0]).values(status="fetched"))
        s.execute(update(SourceImage).where(SourceImage.id == ids[1]).values(status="failed"))
    with factory() as s:
        everyone = status_report(s)["source_images"]
        acme = status_report(s, brand=brand.name)["source_images"]
        other = status_report(s, brand="nobody")["source_images"]
    assert everyone == acme == {"fetched": 1, "failed": 1, "pending": len(ids) - 2}
    assert other == {}
