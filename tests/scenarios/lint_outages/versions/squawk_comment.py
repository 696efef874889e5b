"""Test only: a squawk-ignore comment in the SQL instead of an entry in accepted.toml.

Revision ID: outage_squawk_comment
"""

import sqlalchemy as sa

from alembic import op

revision = "outage_squawk_comment"
down_revision = "outage_unrenderable"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(sa.text("-- squawk-ignore require-concurrent-index-creation"))
    op.create_index("configs_name_idx", "configs", ["name"])


def downgrade() -> None:
    pass
