"""A first note, and an index on the notes' bodies.

Revision ID: notes_0002
Revises: notes_0001
"""

from __future__ import annotations

from alembic import op

revision = "notes_0002"
down_revision = "notes_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("INSERT INTO notes (body) VALUES ('welcome')")
    op.create_index("notes_body_idx", "notes", ["body"])


def downgrade() -> None:
    op.drop_index("notes_body_idx")
    op.execute("DELETE FROM notes")
