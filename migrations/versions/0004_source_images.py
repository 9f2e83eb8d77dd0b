"""source images named by the catalog, and each revision's references to them

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 13:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "source_images",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("url_sha256", sa.String(length=64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("content_type", sa.String(length=100), nullable=True),
        sa.Column("details", _JSON, nullable=False),
        sa.Column("etag", sa.String(length=200), nullable=True),
        sa.Column("last_modified", sa.String(length=100), nullable=True),
        sa.Column("blob_backend", sa.String(length=20), nullable=True),
        sa.Column("blob_key", sa.Text(), nullable=True),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_source_images")),
        sa.UniqueConstraint("url_sha256", name=op.f("uq_source_images_url_sha256")),
    )
    with op.batch_alter_table("source_images") as batch:
        batch.create_index(batch.f("ix_source_images_sha256"), ["sha256"], unique=False)
        batch.create_index(batch.f("ix_source_images_status"), ["status"], unique=False)
    op.create_table(
        "source_image_refs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("product_revision_id", sa.Integer(), nullable=False),
        sa.Column("source_image_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("source_line", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["product_revision_id"],
            ["product_revisions.id"],
            name=op.f("fk_source_image_refs_product_revision_id_product_revisions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["source_image_id"],
            ["source_images.id"],
            name=op.f("fk_source_image_refs_source_image_id_source_images"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_source_image_refs")),
        sa.UniqueConstraint(
            "product_revision_id",
            "position",
            name=op.f("uq_source_image_refs_product_revision_id_position"),
        ),
    )
    with op.batch_alter_table("source_image_refs") as batch:
        batch.create_index(
            batch.f("ix_source_image_refs_source_image_id"), ["source_image_id"], unique=False
        )

    with op.batch_alter_table("shots") as batch:
        batch.add_column(sa.Column("source_image_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("packshot", _JSON, nullable=False, server_default="{}"))
        batch.create_index(batch.f("ix_shots_source_image_id"), ["source_image_id"], unique=False)
        batch.create_foreign_key(
            batch.f("fk_shots_source_image_id_source_images"),
            "source_images",
            ["source_image_id"],
            ["id"],
        )
    if op.get_bind().dialect.name == "postgresql":
        # 0002's reviewer role reads every table (lineage); grants do not reach new tables.
        op.execute(
            """
            DO $$ BEGIN
                IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'shotline_reviewer') THEN
                    GRANT SELECT ON source_images, source_image_refs TO shotline_reviewer;
                END IF;
            END $$;
            """
        )


def downgrade() -> None:
    with op.batch_alter_table("shots") as batch:
        batch.drop_constraint(batch.f("fk_shots_source_image_id_source_images"), type_="foreignkey")
        batch.drop_index(batch.f("ix_shots_source_image_id"))
        batch.drop_column("packshot")
        batch.drop_column("source_image_id")
    op.drop_table("source_image_refs")
    op.drop_table("source_images")
