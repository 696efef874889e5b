"""Test only: an index built without CONCURRENTLY on a table with rows: writes wait for the whole build.

Revision ID: outage_index
"""

import os

from alembic import op

revision = "outage_index"
down_revision = os.environ["TEST_SCENARIO_BASE"]
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("users_role_idx", "users", ["role"])


def downgrade() -> None:
    pass
