"""Test only: VALIDATE CONSTRAINT in a transaction of its own (this revision): it scans under a lock that lets reads and writes through.

Revision ID: safe_validate
"""

import sqlalchemy as sa

from alembic import op

revision = "safe_validate"
down_revision = "safe_constraint"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(sa.text("ALTER TABLE environments VALIDATE CONSTRAINT environments_position_check"))


def downgrade() -> None:
    pass
