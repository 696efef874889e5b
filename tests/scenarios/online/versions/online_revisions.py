"""Test only: the online schema change pattern of revisions 0005-0007, replayed
on the head schema so that replicas of this code can serve while it runs:
expand (a nullable column, metadata only), a batched backfill in an autocommit
block, then a unique index built concurrently.

Revision ID: test_online
Revises: the service's head
"""

import os

import sqlalchemy as sa

from alembic import op

revision = "test_online"
# The service's current head, set by the tests (tests/revisions.py).
down_revision = os.environ["TEST_SCENARIO_BASE"]
branch_labels = None
depends_on = None

BATCH_SIZE = int(os.environ.get("BACKFILL_BATCH_SIZE", "5000"))
BACKFILL_BATCH = sa.text(
    """
    WITH batch AS (
        SELECT id FROM users WHERE id > CAST(:after AS uuid) ORDER BY id LIMIT :size
    ), updated AS (
        UPDATE users AS u SET email_domain = lower(split_part(u.email, '@', 2))
          FROM batch WHERE u.id = batch.id AND u.email_domain IS NULL
        RETURNING u.id
    )
    SELECT (SELECT id FROM batch ORDER BY id DESC LIMIT 1) AS last_id
    """
)


def upgrade() -> None:
    # Runs again over its own work, as the service's revisions do (0007, 0012):
    # the autocommit block commits the column, and a batch that then waits
    # past lock_timeout behind the clients' row locks sends the bootstrap to
    # retry the whole revision (a CI run failed on "column already exists").
    op.add_column(
        "users", sa.Column("email_domain", sa.String(255), nullable=True), if_not_exists=True
    )
    connection = op.get_bind()
    with op.get_context().autocommit_block():
        # A build cut short leaves an invalid index that IF NOT EXISTS would keep.
        op.execute(sa.text("DROP INDEX CONCURRENTLY IF EXISTS users_email_domain_id_key"))
        after = "00000000-0000-0000-0000-000000000000"
        while (
            last_id := connection.execute(
                BACKFILL_BATCH, {"after": after, "size": BATCH_SIZE}
            ).scalar()
        ) is not None:
            after = str(last_id)
        op.execute(
            sa.text(
                "CREATE UNIQUE INDEX CONCURRENTLY users_email_domain_id_key ON users (email_domain, id)"
            )
        )


def downgrade() -> None:
    op.drop_column("users", "email_domain")
