"""Test only: instead of a volatile default, a type change or a rename: expand with a new nullable column (filled in batches, read by the next release, the old one dropped later).

Revision ID: safe_expand
"""

import sqlalchemy as sa

from alembic import op

revision = "safe_expand"
down_revision = "safe_not_null"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("token", sa.UUID(), nullable=True))
    op.add_column("environments", sa.Column("position_big", sa.BigInteger(), nullable=True))
    op.add_column("configs", sa.Column("summary", sa.Text(), nullable=True))


def downgrade() -> None:
    pass
