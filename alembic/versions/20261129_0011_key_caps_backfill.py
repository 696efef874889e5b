"""api_keys: cap existing keys at their user's role; index and validate 0010's additions

Nobody recorded who made the keys that exist before 0010, so each is capped at
its user's present role: from now on it never gains a later promotion. Keys
the previous release makes during the rollout have no cap and act with their
user's role (README, "Keys and roles").

The backfill runs in batches of BATCH_SIZE keys, each its own transaction (an
autocommit block), and resumes after a killed migrator (only keys still
without a cap are touched); the index on created_by_user_id (for ON DELETE SET
NULL) is built concurrently, an INVALID leftover of a killed build dropped
first. Then 0010's constraints are validated, each in a transaction of its own
that lets reads and writes of api_keys through.

Revision ID: 0011_key_caps_backfill
Revises: 0010_key_makers_operator_audit
Create Date: 2026-11-29 08:00:00+00:00

"""

import os
from collections.abc import Sequence

import sqlalchemy as sa

from alembic import context, op

revision: str = "0011_key_caps_backfill"
down_revision: str | Sequence[str] | None = "0010_key_makers_operator_audit"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH_SIZE = int(os.environ.get("BACKFILL_BATCH_SIZE", "5000"))
FIRST_ID = "00000000-0000-0000-0000-000000000000"
INDEX = "api_keys_created_by_user_id_idx"
CONSTRAINTS = ("api_keys_created_by_user_id_fkey", "api_keys_max_role_check")

# One batch: the next BATCH_SIZE keys after the last one, capped where not yet.
CAP_BATCH = sa.text(
    """
    WITH batch AS (
        SELECT id FROM api_keys WHERE id > CAST(:after AS uuid) ORDER BY id LIMIT :size
    ), capped AS (
        UPDATE api_keys AS k
           SET max_role = u.role
          FROM batch, users AS u
         WHERE k.id = batch.id AND u.id = k.user_id AND k.max_role IS NULL
        RETURNING k.id
    )
    SELECT (SELECT id FROM batch ORDER BY id DESC LIMIT 1) AS last_id,
           (SELECT count(*) FROM capped) AS capped
    """
)


def upgrade() -> None:
    with op.get_context().autocommit_block():
        _cap_existing_keys()
        op.execute(sa.text(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}"))
        op.execute(sa.text(f"CREATE INDEX CONCURRENTLY {INDEX} ON api_keys (created_by_user_id)"))
    for constraint in CONSTRAINTS:
        op.execute(sa.text(f"ALTER TABLE api_keys VALIDATE CONSTRAINT {constraint}"))


def _cap_existing_keys() -> None:
    batch = CAP_BATCH.bindparams(size=BATCH_SIZE)
    if context.is_offline_mode():
        # Offline there are no rows to read: render the batch statement once.
        op.execute(batch.bindparams(after=FIRST_ID))
        return
    connection = op.get_bind()
    after = FIRST_ID
    while (last_id := connection.execute(batch, {"after": after}).one()[0]) is not None:
        after = str(last_id)


def downgrade() -> None:
    # The caps stay: 0010's downgrade drops the column. The constraints stay
    # validated, which 0010's code and data satisfy.
    with op.get_context().autocommit_block():
        op.execute(sa.text(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}"))
