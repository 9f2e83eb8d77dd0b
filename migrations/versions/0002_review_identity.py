"""review events record the authenticated reviewer; a shotline_reviewer role on Postgres

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 08:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REVIEWER_ROLE = "shotline_reviewer"

# What `shotline review approve/reject` (and an in-process publish after it) needs, no more:
# read everything, append review events, move a shot's state, record its asset.
_GRANTS = (
    "GRANT USAGE ON SCHEMA public TO {role}",
    "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}",
    "GRANT INSERT ON review_events, assets TO {role}",
    "GRANT UPDATE (state, error, updated_at) ON shots TO {role}",
    "GRANT USAGE, SELECT ON SEQUENCE review_events_id_seq, assets_id_seq TO {role}",
)


def upgrade() -> None:
    with op.batch_alter_table("review_events") as batch:
        batch.add_column(sa.Column("authenticated_reviewer", sa.String(length=200), nullable=True))
    if op.get_bind().dialect.name != "postgresql":
        return
    # Roles are cluster-wide: create it once, grant in every database that runs this migration.
    # A reviewer's own login is then a member of it (CREATE ROLE alice LOGIN IN ROLE ...), so
    # the database authenticates who approves.
    op.execute(
        f"""
        DO $$ BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{REVIEWER_ROLE}') THEN
                CREATE ROLE {REVIEWER_ROLE} NOLOGIN;
            END IF;
        END $$;
        """
    )
    for grant in _GRANTS:
        op.execute(grant.format(role=REVIEWER_ROLE))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for grant in _GRANTS:
            revoke = grant.replace("GRANT", "REVOKE", 1).replace(" TO ", " FROM ")
            op.execute(revoke.format(role=REVIEWER_ROLE))
    with op.batch_alter_table("review_events") as batch:
        batch.drop_column("authenticated_reviewer")
