"""Test only: a NOT NULL column without a default: fails on a table with rows, and the running release does not write it.

Revision ID: outage_not_null
"""

import sqlalchemy as sa

from alembic import op

revision = "outage_not_null"
down_revision = "outage_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("nickname", sa.Text(), nullable=False))


def downgrade() -> None:
    pass
