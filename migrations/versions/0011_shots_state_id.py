"""ix_shots_state_id: keyset pages of one state (the review queue) stay fast

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 23:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_shots_state_id", "shots", ["state", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_shots_state_id", table_name="shots")
