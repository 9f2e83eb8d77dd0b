"""shots.hires: a shot's output size apart from the model's, and its second pass

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08 00:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    # {} for every existing shot: the native size, no second pass (as they were made).
    with op.batch_alter_table("shots") as batch:
        batch.add_column(sa.Column("hires", _JSON, nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("shots") as batch:
        batch.drop_column("hires")
