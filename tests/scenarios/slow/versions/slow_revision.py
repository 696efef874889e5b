"""Test only: a revision that creates a table, then sleeps in the same transaction.

Revision ID: test_slow
Revises: the service's head
"""

import os

import sqlalchemy as sa

from alembic import op

revision = "test_slow"
# The service's current head, set by the tests (tests/revisions.py).
down_revision = os.environ["TEST_SCENARIO_BASE"]
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Counts attempts where a test created the sequence: nextval is not rolled back.
    op.execute(sa.text("SELECT nextval(to_regclass('public.test_attempts'))"))
    op.create_table("slow_marker", sa.Column("id", sa.Integer, primary_key=True))
    seconds = float(os.environ.get("TEST_SLOW_REVISION_SECONDS", "60"))
    op.execute(sa.text(f"SELECT pg_sleep({seconds})"))


def downgrade() -> None:
    op.drop_table("slow_marker")
