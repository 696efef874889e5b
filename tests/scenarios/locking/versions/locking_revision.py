"""Test only: a revision that needs an ACCESS EXCLUSIVE lock on configs.

Revision ID: test_locking
Revises: the service's head
"""

import os

import sqlalchemy as sa

from alembic import op

revision = "test_locking"
# The service's current head, set by the tests (tests/revisions.py).
down_revision = os.environ["TEST_SCENARIO_BASE"]
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("configs", sa.Column("test_column", sa.Integer))


def downgrade() -> None:
    op.drop_column("configs", "test_column")
