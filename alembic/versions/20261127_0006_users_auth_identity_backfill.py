"""users: backfill auth_provider and auth_subject from cognito_sub or email

Rows with a cognito_sub become provider 'cognito' with that subject, unchanged;
rows without one (NULL, empty or only blanks) become provider 'email' with the
lower-cased email (PostgreSQL's lower(), as the email uniqueness index uses).
A blank cognito_sub is not an identity, so the downgrade restores it as NULL.

The backfill runs in batches of BATCH_SIZE rows in key order, each batch its own
transaction (an autocommit block): row locks are held for one batch only, and a
migrator killed half-way leaves committed batches behind and resumes after them,
since only rows still without a provider are touched.

Revision ID: 0006_auth_identity_backfill
Revises: 0005_auth_identity_expand
Create Date: 2026-11-27 07:00:00+00:00

"""

import os
from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0006_auth_identity_backfill"
down_revision: str | Sequence[str] | None = "0005_auth_identity_expand"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH_SIZE = int(os.environ.get("BACKFILL_BATCH_SIZE", "5000"))
FIRST_ID = "00000000-0000-0000-0000-000000000000"

# One batch: the next BATCH_SIZE ids after the last one, updated where still empty.
BACKFILL_BATCH = sa.text(
    """
    WITH batch AS (
        SELECT id FROM users WHERE id > CAST(:after AS uuid) ORDER BY id LIMIT :size
    ), updated AS (
        UPDATE users AS u
           SET auth_provider = CASE WHEN NULLIF(btrim(u.cognito_sub), '') IS NOT NULL
                                    THEN 'cognito' ELSE 'email' END,
               auth_subject = CASE WHEN NULLIF(btrim(u.cognito_sub), '') IS NOT NULL
                                   THEN u.cognito_sub ELSE lower(u.email) END
          FROM batch
         WHERE u.id = batch.id AND u.auth_provider IS NULL
        RETURNING u.id
    )
    SELECT (SELECT id FROM batch ORDER BY id DESC LIMIT 1) AS last_id,
           (SELECT count(*) FROM updated) AS updated
    """
)


def upgrade() -> None:
    connection = op.get_bind()
    with op.get_context().autocommit_block():
        after = FIRST_ID
        while True:
            last_id, _ = connection.execute(
                BACKFILL_BATCH, {"after": after, "size": BATCH_SIZE}
            ).one()
            if last_id is None:
                break
            after = str(last_id)


def downgrade() -> None:
    # The expand revision's downgrade drops the columns; nothing to undo here.
    pass
