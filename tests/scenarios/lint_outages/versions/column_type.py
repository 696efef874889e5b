"""Test only: ALTER COLUMN TYPE: rewrites the table under an ACCESS EXCLUSIVE lock.

Revision ID: outage_column_type
"""

import sqlalchemy as sa

from alembic import op

revision = "outage_column_type"
down_revision = "outage_volatile_default"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.alter_column("environments", "position", type_=sa.BigInteger())


def downgrade() -> None:
    pass
