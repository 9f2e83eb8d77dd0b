"""shot_embeddings: each shot's CLIP image embedding with its model

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 13:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "shot_embeddings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("shot_id", sa.Integer(), nullable=False),
        sa.Column("clip_model", sa.String(length=200), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["shot_id"], ["shots.id"], name=op.f("fk_shot_embeddings_shot_id_shots")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shot_embeddings")),
        sa.UniqueConstraint("shot_id", name=op.f("uq_shot_embeddings_shot_id")),
    )
    op.create_index(
        op.f("ix_shot_embeddings_clip_model"), "shot_embeddings", ["clip_model"], unique=False
    )
    if op.get_bind().dialect.name == "postgresql":
        # Reviewers read embeddings for near-duplicate flags (0002 granted the tables then).
        op.execute(
            "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'shotline_reviewer') "
            "THEN GRANT SELECT ON shot_embeddings TO shotline_reviewer; END IF; END $$"
        )


def downgrade() -> None:
    op.drop_index(op.f("ix_shot_embeddings_clip_model"), table_name="shot_embeddings")
    op.drop_table("shot_embeddings")
