"""create schema_migration_audit

The audit trail of applied migration steps. The steps applied before this
table exists (on a new database) are written into it by this revision's own
transaction.

Revision ID: 0009_migration_audit
Revises: 0008_drop_cognito_sub
Create Date: 2026-11-27 07:00:00+00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0009_migration_audit"
down_revision: str | Sequence[str] | None = "0008_drop_cognito_sub"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "schema_migration_audit",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("revision", sa.String(length=128), nullable=False),
        sa.Column("down_revisions", postgresql.ARRAY(sa.String(length=128)), nullable=False),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_seconds", sa.Double(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("app_version", sa.String(length=64), nullable=False),
        sa.Column("database_user", sa.String(length=128), nullable=False),
        sa.Column("runner", sa.String(length=32), nullable=False),
        sa.Column("checksum", sa.String(length=64), nullable=True),
        sa.CheckConstraint(
            "direction IN ('upgrade', 'downgrade')",
            name=op.f("schema_migration_audit_direction_check"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("schema_migration_audit_pkey")),
    )
    op.create_index(
        "schema_migration_audit_revision_finished_at_idx",
        "schema_migration_audit",
        ["revision", "finished_at"],
    )


def downgrade() -> None:
    op.drop_table("schema_migration_audit")
