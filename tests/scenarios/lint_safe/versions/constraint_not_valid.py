"""Test only: the constraint added NOT VALID: no scan, a brief lock.

Revision ID: safe_constraint
"""

import sqlalchemy as sa

from alembic import op

revision = "safe_constraint"
down_revision = "safe_expand"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        sa.text(
            "ALTER TABLE environments ADD CONSTRAINT environments_position_check "
            "CHECK (position >= 0) NOT VALID"
        )
    )


def downgrade() -> None:
    pass
