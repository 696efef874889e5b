"""users: drop cognito_sub (contract)

Deploy this only once no running code reads or writes cognito_sub. The
downgrade restores cognito_sub from the rows whose provider is 'cognito', in
batches, and rebuilds its unique constraint from a concurrently built index.

Revision ID: 0008_drop_cognito_sub
Revises: 0007_auth_identity_constraints
Create Date: 2026-11-27 07:00:00+00:00

"""

import os
from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0008_drop_cognito_sub"
down_revision: str | Sequence[str] | None = "0007_auth_identity_constraints"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH_SIZE = int(os.environ.get("BACKFILL_BATCH_SIZE", "5000"))
FIRST_ID = "00000000-0000-0000-0000-000000000000"
CONSTRAINT = "users_cognito_sub_key"

RESTORE_BATCH = sa.text(
    """
    WITH batch AS (
        SELECT id FROM users WHERE id > CAST(:after AS uuid) ORDER BY id LIMIT :size
    ), updated AS (
        UPDATE users AS u SET cognito_sub = u.auth_subject
          FROM batch
         WHERE u.id = batch.id AND u.auth_provider = 'cognito' AND u.cognito_sub IS NULL
        RETURNING u.id
    )
    SELECT (SELECT id FROM batch ORDER BY id DESC LIMIT 1) AS last_id,
           (SELECT count(*) FROM updated) AS updated
    """
)


def upgrade() -> None:
    # Dropping the column drops its unique constraint with it; a catalog-only change.
    op.drop_column("users", "cognito_sub")


def downgrade() -> None:
    # Committed by the autocommit block below before the revision is stamped
    # down; a downgrade that dies after it runs again over the column.
    op.add_column(
        "users", sa.Column("cognito_sub", sa.String(length=128), nullable=True), if_not_exists=True
    )
    connection = op.get_bind()
    with op.get_context().autocommit_block():
        after = FIRST_ID
        while True:
            last_id, _ = connection.execute(
                RESTORE_BATCH, {"after": after, "size": BATCH_SIZE}
            ).one()
            if last_id is None:
                break
            after = str(last_id)
        op.execute(sa.text(f"DROP INDEX CONCURRENTLY IF EXISTS {CONSTRAINT}"))
        op.execute(sa.text(f"CREATE UNIQUE INDEX CONCURRENTLY {CONSTRAINT} ON users (cognito_sub)"))
    op.execute(
        sa.text(f"ALTER TABLE users ADD CONSTRAINT {CONSTRAINT} UNIQUE USING INDEX {CONSTRAINT}")
    )
