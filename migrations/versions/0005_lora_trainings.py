"""lora_trainings: brand LoRA training runs and the adapters they produce

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 13:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "lora_trainings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_key", sa.String(length=64), nullable=False),
        sa.Column("brand_id", sa.Integer(), nullable=True),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("trigger_word", sa.String(length=100), nullable=False),
        sa.Column("source_uri", sa.Text(), nullable=False),
        sa.Column("dataset_digest", sa.String(length=64), nullable=False),
        sa.Column("files", _JSON, nullable=False),
        sa.Column("base_model", sa.Text(), nullable=False),
        sa.Column("base_model_digest", sa.String(length=64), nullable=True),
        sa.Column("hyperparameters", _JSON, nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("steps_total", sa.Integer(), nullable=False),
        sa.Column("steps_done", sa.Integer(), nullable=False),
        sa.Column("progress", _JSON, nullable=False),
        sa.Column("loss_summary", _JSON, nullable=False),
        sa.Column("checkpoints", _JSON, nullable=False),
        sa.Column("warnings", _JSON, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("adapter_id", sa.Integer(), nullable=True),
        sa.Column("adapter_sha256", sa.String(length=64), nullable=True),
        sa.Column("adapter_uri", sa.Text(), nullable=True),
        sa.Column("validation_key", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["adapter_id"],
            ["lora_adapters.id"],
            name=op.f("fk_lora_trainings_adapter_id_lora_adapters"),
        ),
        sa.ForeignKeyConstraint(
            ["brand_id"], ["brands.id"], name=op.f("fk_lora_trainings_brand_id_brands")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lora_trainings")),
        sa.UniqueConstraint("run_key", name=op.f("uq_lora_trainings_run_key")),
    )
    with op.batch_alter_table("lora_trainings") as batch:
        for col in ("brand_id", "dataset_digest", "state", "adapter_id", "adapter_sha256"):
            batch.create_index(batch.f(f"ix_lora_trainings_{col}"), [col], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        # Lineage (which review show prints) reads training runs; 0002's grants predate them.
        op.execute(
            "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'shotline_reviewer') "
            "THEN GRANT SELECT ON lora_trainings TO shotline_reviewer; END IF; END $$"
        )


def downgrade() -> None:
    op.drop_table("lora_trainings")
