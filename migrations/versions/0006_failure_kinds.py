"""shots.error_kind: why a shot failed, as a kind beside the free-text reason

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 22:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("shots") as batch:
        batch.add_column(sa.Column("error_kind", sa.String(length=32), nullable=True))
        batch.create_index(batch.f("ix_shots_error_kind"), ["error_kind"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("shots") as batch:
        batch.drop_index(batch.f("ix_shots_error_kind"))
        batch.drop_column("error_kind")
