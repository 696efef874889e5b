"""Test only: a data migration that reads rows and cannot render offline, not declared.

Revision ID: outage_unrenderable
"""

import sqlalchemy as sa

from alembic import op

revision = "outage_unrenderable"
down_revision = "outage_rename"
branch_labels = None
depends_on = None


def upgrade() -> None:
    connection = op.get_bind()
    count = connection.execute(sa.text("SELECT count(*) FROM users")).scalar_one()
    op.execute(sa.text(f"SELECT {int(count)}"))


def downgrade() -> None:
    pass
