"""reviewer_tokens.sessions_after: logging out ends the token's browser sessions

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08 01:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("reviewer_tokens") as batch:
        batch.add_column(sa.Column("sessions_after", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reviewer_tokens") as batch:
        batch.drop_column("sessions_after")
