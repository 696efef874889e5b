"""Test only: a NOT NULL column with a constant default: catalog-only since PostgreSQL 11, and rows the running release inserts get the default.

Revision ID: safe_not_null
"""

import sqlalchemy as sa

from alembic import op

revision = "safe_not_null"
down_revision = "safe_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "users", sa.Column("nickname", sa.Text(), server_default=sa.text("''"), nullable=False)
    )


def downgrade() -> None:
    pass
