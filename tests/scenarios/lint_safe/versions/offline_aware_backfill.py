"""Test only: a batched backfill that renders offline: in offline mode it emits its batch statement once, so the SQL it runs is linted whole.

Revision ID: safe_backfill
"""

import sqlalchemy as sa

from alembic import context, op

revision = "safe_backfill"
down_revision = "safe_validate"
branch_labels = None
depends_on = None

FIRST_ID = "00000000-0000-0000-0000-000000000000"
BATCH = sa.text(
    """
    WITH batch AS (
        SELECT id FROM users WHERE id > CAST(:after AS uuid) ORDER BY id LIMIT 1000
    ), updated AS (
        UPDATE users AS u SET token = gen_random_uuid()
          FROM batch WHERE u.id = batch.id AND u.token IS NULL
    )
    SELECT max(id::text) FROM batch
    """
)


def upgrade() -> None:
    with op.get_context().autocommit_block():
        if context.is_offline_mode():
            # Offline there are no rows to read: render the batch statement once.
            op.execute(BATCH.bindparams(after=FIRST_ID))
            return
        connection = op.get_bind()
        after = FIRST_ID
        while (last := connection.execute(BATCH, {"after": after}).scalar()) is not None:
            after = str(last)


def downgrade() -> None:
    pass
