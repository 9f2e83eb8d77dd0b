"""The schema is Alembic's: one head, and no drift between models and migrations."""

from __future__ import annotations

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from catalog import migrate
from catalog.models import Base


def test_single_head() -> None:
    script = ScriptDirectory.from_config(migrate.alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1


def test_no_drift_postgres(pg_url: str) -> None:
    migrate.check(pg_url)


# The JSON expression indexes (0013) are Postgres-only lookups; alembic can't reflect
# expression indexes on SQLite and says so. The Postgres test above compares them.
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based")
def test_no_drift_sqlite(sqlite_url: str) -> None:
    migrate.check(sqlite_url)


def test_every_model_table_exists(engine: Engine) -> None:
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables


def test_naming_convention_applied(pg_engine: Engine) -> None:
    fks = inspect(pg_engine).get_foreign_keys("shots")
    assert all(fk["name"].startswith("fk_shots_") for fk in fks)
    uqs = inspect(pg_engine).get_unique_constraints("shots")
    assert any(u["name"].startswith("uq_shots_") for u in uqs)
