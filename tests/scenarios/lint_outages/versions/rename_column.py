"""Test only: a renamed column: the running release still reads the old name.

Revision ID: outage_rename
"""

from alembic import op

revision = "outage_rename"
down_revision = "outage_constraint"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.alter_column("configs", "description", new_column_name="summary")


def downgrade() -> None:
    pass
