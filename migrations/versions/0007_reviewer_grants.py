"""the reviewer role reads every table (Postgres)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 10:00:00

0002 granted ``shotline_reviewer`` SELECT on the tables that existed then; a grant does not
reach tables made later, so ``review list``/``show``/``sheet`` failed on ``shot_embeddings``
(0003). Grant SELECT on every table now, and by default on tables later migrations create
(as the role that runs the migrations), so a new table can't lock reviewers out again.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REVIEWER_ROLE = "shotline_reviewer"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        f"""
        DO $$ BEGIN
            IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{REVIEWER_ROLE}') THEN
                GRANT SELECT ON ALL TABLES IN SCHEMA public TO {REVIEWER_ROLE};
                ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES
                    TO {REVIEWER_ROLE};
            END IF;
        END $$;
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # SELECT on the tables 0002-0005 granted stays: those grants are theirs to revoke.
    op.execute(
        f"""
        DO $$ BEGIN
            IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{REVIEWER_ROLE}') THEN
                ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE SELECT ON TABLES
                    FROM {REVIEWER_ROLE};
                REVOKE SELECT ON shot_embeddings FROM {REVIEWER_ROLE};
            END IF;
        END $$;
        """
    )
