"""Test only: a revision whose second statement fails.

Revision ID: test_failing
Revises: the service's head
"""

import os

import sqlalchemy as sa

from alembic import op

revision = "test_failing"
# The service's current head, set by the tests (tests/revisions.py).
down_revision = os.environ["TEST_SCENARIO_BASE"]
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Counts attempts where a test created the sequence: nextval is not rolled back.
    op.execute(sa.text("SELECT nextval(to_regclass('public.test_attempts'))"))
    op.create_table("failing_marker", sa.Column("id", sa.Integer, primary_key=True))
    op.execute(sa.text("ALTER TABLE no_such_table ADD COLUMN x integer"))


def downgrade() -> None:
    op.drop_table("failing_marker")
