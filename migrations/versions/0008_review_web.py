"""review in the browser: reviewer tokens; pick 1 of N (shots.candidate)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10 10:00:00

``reviewer_tokens`` holds the sha256 of each reviewer token (``shotline review token``).
``shots.candidate`` numbers the shots of one slot (revision, variant, template) when a
template asks for ``candidates: N``; the slot's unique constraint gains it. Existing shots
are candidate 0, the only one of their slot.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_SLOT = "uq_shots_product_revision_id_variant_key_template_name"
NEW_SLOT = "uq_shots_slot_candidate"  # the convention's name would pass 63 characters
SLOT = ["product_revision_id", "variant_key", "template_name"]


def upgrade() -> None:
    op.create_table(
        "reviewer_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reviewer_tokens")),
        sa.UniqueConstraint("token_sha256", name=op.f("uq_reviewer_tokens_token_sha256")),
    )
    op.create_index(op.f("ix_reviewer_tokens_name"), "reviewer_tokens", ["name"], unique=False)
    with op.batch_alter_table("shots") as batch:
        batch.add_column(
            sa.Column("candidate", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        batch.drop_constraint(OLD_SLOT, type_="unique")
        batch.create_unique_constraint(op.f(NEW_SLOT), [*SLOT, "candidate"])


def downgrade() -> None:
    with op.batch_alter_table("shots") as batch:
        batch.drop_constraint(NEW_SLOT, type_="unique")
        batch.create_unique_constraint(op.f(OLD_SLOT), SLOT)
        batch.drop_column("candidate")
    op.drop_index(op.f("ix_reviewer_tokens_name"), table_name="reviewer_tokens")
    op.drop_table("reviewer_tokens")
