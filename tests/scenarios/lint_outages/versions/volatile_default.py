"""Test only: a NOT NULL column with a volatile default: rewrites the table under an ACCESS EXCLUSIVE lock.

Revision ID: outage_volatile_default
"""

import sqlalchemy as sa

from alembic import op

revision = "outage_volatile_default"
down_revision = "outage_not_null"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "users",
        sa.Column("token", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
    )


def downgrade() -> None:
    pass
