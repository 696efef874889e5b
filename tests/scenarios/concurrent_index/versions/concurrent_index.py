"""Test only: fill a table, pause while other migrators queue for the lock, then
build an index with CREATE INDEX CONCURRENTLY in an autocommit block.

Revision ID: test_concurrent_index
Revises: the service's head
"""

import os

import sqlalchemy as sa

from alembic import op

revision = "test_concurrent_index"
# The service's current head, set by the tests (tests/revisions.py).
down_revision = os.environ["TEST_SCENARIO_BASE"]
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events", sa.Column("id", sa.Integer, primary_key=True), sa.Column("kind", sa.Text)
    )
    op.execute(
        sa.text(
            "INSERT INTO events (kind) SELECT 'kind-' || (n % 97) FROM generate_series(1, 200000) n"
        )
    )
    op.execute(sa.text(f"SELECT pg_sleep({float(os.environ.get('TEST_PAUSE_SECONDS', '2'))})"))
    with op.get_context().autocommit_block():
        # A build killed half-way leaves an INVALID index under the same name.
        op.execute(sa.text("DROP INDEX CONCURRENTLY IF EXISTS events_kind_idx"))
        op.execute(sa.text("CREATE INDEX CONCURRENTLY events_kind_idx ON events (kind)"))


def downgrade() -> None:
    op.drop_table("events")
