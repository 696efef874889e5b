"""users: unique (account_id, auth_provider, auth_subject), both NOT NULL

The unique index is built with CREATE INDEX CONCURRENTLY (writes go on while it
builds). NOT NULL is added without a long exclusive lock: a CHECK ... NOT VALID
(instant), VALIDATE CONSTRAINT (scans under a lock that lets writes through),
then SET NOT NULL, which PostgreSQL 12+ proves from the valid check without a
scan, then the check is dropped.

Revision ID: 0007_auth_identity_constraints
Revises: 0006_auth_identity_backfill
Create Date: 2026-11-27 07:00:00+00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0007_auth_identity_constraints"
down_revision: str | Sequence[str] | None = "0006_auth_identity_backfill"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "users_account_id_auth_provider_auth_subject_key"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        # A build that was killed or failed leaves an INVALID index of this name;
        # IF NOT EXISTS would keep it, so drop it and build again.
        op.execute(sa.text(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}"))
        op.execute(
            sa.text(
                f"CREATE UNIQUE INDEX CONCURRENTLY {INDEX} ON users (account_id, auth_provider, auth_subject)"
            )
        )
    for column in ("auth_provider", "auth_subject"):
        check = f"users_{column}_not_null_check"
        op.execute(
            sa.text(
                f"ALTER TABLE users ADD CONSTRAINT {check} CHECK ({column} IS NOT NULL) NOT VALID"
            )
        )
        op.execute(sa.text(f"ALTER TABLE users VALIDATE CONSTRAINT {check}"))
        op.alter_column("users", column, nullable=False)
        op.execute(sa.text(f"ALTER TABLE users DROP CONSTRAINT {check}"))


def downgrade() -> None:
    op.alter_column("users", "auth_subject", nullable=True)
    op.alter_column("users", "auth_provider", nullable=True)
    with op.get_context().autocommit_block():
        op.execute(sa.text(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}"))
