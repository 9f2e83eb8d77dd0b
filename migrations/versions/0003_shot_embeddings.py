"""shot embeddings; filter_results keeps every gate pass (one current row per shot)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 13:50:00
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
    # A rescore appends a row per pass; the partial unique index keeps one current row per
    # shot, so a redelivered gate task still cannot write a second first decision.
    with op.batch_alter_table("filter_results") as batch:
        batch.drop_constraint("uq_filter_results_shot_id", type_="unique")
        batch.add_column(
            sa.Column("current", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch.alter_column(
            "policy_version", type_=sa.String(length=200), existing_type=sa.String(length=64)
        )
    op.create_index("ix_filter_results_shot_id", "filter_results", ["shot_id"])
    op.create_index(
        "uq_filter_results_current_shot_id",
        "filter_results",
        ["shot_id"],
        unique=True,
        postgresql_where=sa.text("current"),
        sqlite_where=sa.text("current"),
    )


def downgrade() -> None:
    op.drop_index("uq_filter_results_current_shot_id", table_name="filter_results")
    op.drop_index("ix_filter_results_shot_id", table_name="filter_results")
    op.execute("DELETE FROM filter_results WHERE NOT current")
    with op.batch_alter_table("filter_results") as batch:
        batch.alter_column(
            "policy_version", type_=sa.String(length=64), existing_type=sa.String(length=200)
        )
        batch.drop_column("current")
        batch.create_unique_constraint("uq_filter_results_shot_id", ["shot_id"])
    op.drop_index(op.f("ix_shot_embeddings_clip_model"), table_name="shot_embeddings")
    op.drop_table("shot_embeddings")
