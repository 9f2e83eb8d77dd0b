"""delivery: asset renditions, recalls, and the error history of retried shots

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-10 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "asset_renditions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("asset_id", sa.Integer(), nullable=False),
        sa.Column("shot_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("backend", sa.String(length=20), nullable=False),
        sa.Column("bucket", sa.String(length=255), nullable=True),
        sa.Column("key", sa.String(length=1024), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("content_type", sa.String(length=50), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("quality", sa.Integer(), nullable=True),
        sa.Column("watermark_verified", sa.Boolean(), nullable=False),
        sa.Column("bit_accuracy", sa.Float(), nullable=True),
        sa.Column("xmp_ai_tag", sa.Boolean(), nullable=False),
        sa.Column("icc_srgb", sa.Boolean(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["asset_id"],
            ["assets.id"],
            name=op.f("fk_asset_renditions_asset_id_assets"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["shot_id"], ["shots.id"], name=op.f("fk_asset_renditions_shot_id_shots")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_asset_renditions")),
        sa.UniqueConstraint(
            "asset_id", "channel", "name", name=op.f("uq_asset_renditions_asset_id_channel_name")
        ),
    )
    with op.batch_alter_table("asset_renditions") as batch:
        batch.create_index(batch.f("ix_asset_renditions_shot_id"), ["shot_id"], unique=False)
        batch.create_index(batch.f("ix_asset_renditions_key"), ["key"], unique=False)
        batch.create_index(batch.f("ix_asset_renditions_sha256"), ["sha256"], unique=False)

    op.create_table(
        "asset_recalls",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("asset_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("recalled_by", sa.String(length=200), nullable=False),
        sa.Column("selector", _JSON, nullable=False),
        sa.Column("objects", sa.String(length=20), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["asset_id"], ["assets.id"], name=op.f("fk_asset_recalls_asset_id_assets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_asset_recalls")),
    )
    with op.batch_alter_table("asset_recalls") as batch:
        batch.create_index(batch.f("ix_asset_recalls_asset_id"), ["asset_id"], unique=False)

    op.create_table(
        "shot_error_history",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("shot_id", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("error_kind", sa.String(length=32), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("failed_at", _TS, nullable=True),
        sa.Column("retried_by", sa.String(length=200), nullable=False),
        sa.Column("retried_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["shot_id"], ["shots.id"], name=op.f("fk_shot_error_history_shot_id_shots")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shot_error_history")),
    )
    with op.batch_alter_table("shot_error_history") as batch:
        batch.create_index(batch.f("ix_shot_error_history_shot_id"), ["shot_id"], unique=False)


def downgrade() -> None:
    op.drop_table("shot_error_history")
    op.drop_table("asset_recalls")
    op.drop_table("asset_renditions")
