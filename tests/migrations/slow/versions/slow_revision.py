"""Test only: a revision that creates a table, then sleeps in the same transaction.

Revision ID: test_slow
Revises: 0003_environments
"""

import os

import sqlalchemy as sa

from alembic import op

revision = "test_slow"
down_revision = "0003_environments"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("slow_marker", sa.Column("id", sa.Integer, primary_key=True))
    seconds = float(os.environ.get("TEST_SLOW_REVISION_SECONDS", "60"))
    op.execute(sa.text(f"SELECT pg_sleep({seconds})"))


def downgrade() -> None:
    op.drop_table("slow_marker")
