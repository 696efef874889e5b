"""Test only: the index built CONCURRENTLY outside a transaction, after dropping an INVALID leftover of a killed build.

Revision ID: safe_index
"""

import os

import sqlalchemy as sa

from alembic import op

revision = "safe_index"
down_revision = os.environ["TEST_SCENARIO_BASE"]
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(sa.text("DROP INDEX CONCURRENTLY IF EXISTS users_role_idx"))
        op.execute(
            sa.text("CREATE INDEX CONCURRENTLY IF NOT EXISTS users_role_idx ON users (role)")
        )


def downgrade() -> None:
    pass
