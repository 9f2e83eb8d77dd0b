"""Lookup indexes: a product key (sku), a variant sku, the review queue by template

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08 00:15:00

- ``ix_products_sku``: ``lineage SKU`` matches ``products.sku`` alone; the unique
  ``(brand_id, sku)`` leads with the brand and cannot serve it.
- ``ix_shots_variant_sku`` / ``ix_shots_variant_skus`` (Postgres): ``lineage SKU`` for a
  variant sku matches ``variant ->> 'sku'`` or ``variant -> 'skus' @> '["SKU"]'``
  (``catalog.lineage._variant_has_sku``): a btree on the expression and a GIN on the array.
  SQLite (the single-machine demo) keeps its scan: its JSON functions have no such index.
- ``ix_shots_template_name_state_id``: ``review list|approve --all-pending --template T``
  (with or without ``--brand``): the state of one template's shots, in id order for keyset
  pages. ``ix_shots_brand_id_state`` already serves brand and state.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_products_sku", "products", ["sku"], unique=False)
    op.create_index(
        "ix_shots_template_name_state_id", "shots", ["template_name", "state", "id"], unique=False
    )
    if op.get_bind().dialect.name == "postgresql":
        op.create_index("ix_shots_variant_sku", "shots", [sa.text("(variant ->> 'sku')")])
        op.create_index(
            "ix_shots_variant_skus",
            "shots",
            [sa.text("(variant -> 'skus')")],
            postgresql_using="gin",
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_shots_variant_skus", table_name="shots")
        op.drop_index("ix_shots_variant_sku", table_name="shots")
    op.drop_index("ix_shots_template_name_state_id", table_name="shots")
    op.drop_index("ix_products_sku", table_name="products")
