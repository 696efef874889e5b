"""The notes table and the bootstrap's audit trail.

Revision ID: notes_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY

from alembic import op

revision = "notes_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notes",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_table(
        "schema_migration_audit",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("revision", sa.String(128), nullable=False),
        sa.Column("down_revisions", ARRAY(sa.String(128)), nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_seconds", sa.Double, nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("app_version", sa.String(64), nullable=False),
        sa.Column("database_user", sa.String(128), nullable=False),
        sa.Column("runner", sa.String(32), nullable=False),
        sa.Column("checksum", sa.String(64)),
        sa.CheckConstraint("direction IN ('upgrade', 'downgrade')", name="direction"),
    )
    op.create_index(
        "schema_migration_audit_revision_finished_at_idx",
        "schema_migration_audit",
        ["revision", "finished_at"],
    )


def downgrade() -> None:
    op.drop_table("schema_migration_audit")
    op.drop_table("notes")
