"""Fixtures shared by the catalog tests that commit (import, sources): a database per test
module on SQLite and real Postgres, and a fresh brand per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from catalog import migrate
from catalog.db import make_engine, make_sessionmaker
from pipeline.brand.config import BrandConfig
from pipeline.brand.loader import find_brand
from tests.conftest import ROOT, create_pg_database, drop_pg_database


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[sessionmaker[Session]]:
    """The importer commits, so each module run gets its own database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('catalog') / 'catalog.db'}"
        migrate.upgrade(url)
    else:
        url = create_pg_database("shotline_imp")
    engine = make_engine(url)
    yield make_sessionmaker(engine)
    engine.dispose()
    if request.param == "postgres":
        drop_pg_database(url)


@pytest.fixture
def brand() -> BrandConfig:
    """A fresh brand per test: products are keyed by brand, so tests never collide."""
    base = find_brand(ROOT / "samples" / "brands", "acme")
    return base.model_copy(update={"name": f"t-{uuid.uuid4().hex[:10]}"})
