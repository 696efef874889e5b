"""Test only: ADD CONSTRAINT without NOT VALID: scans the table while writes wait.

Revision ID: outage_constraint
"""

from alembic import op

revision = "outage_constraint"
down_revision = "outage_column_type"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_check_constraint("environments_position_check", "environments", "position >= 0")


def downgrade() -> None:
    pass
