"""create schema_migration_holds

A revision an operator cancelled (pg_cancel_backend) is held: no process runs
it again until an operator lifts the hold (`python -m service migrate
--resume --reason TEXT`); each hold and its lifting are kept, with who and
why (service/migrations/holds.py).

Expand-only: a new table the previous release never reads.

Revision ID: 0014_migration_holds
Revises: 0013_sdk_environments
Create Date: 2026-12-06 14:30:00+00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0014_migration_holds"
down_revision: str | Sequence[str] | None = "0013_sdk_environments"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "schema_migration_holds",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("revision", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "held_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("held_by", sa.Text(), nullable=False),
        sa.Column("lifted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lifted_by", sa.Text(), nullable=True),
        sa.Column("lift_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("schema_migration_holds_pkey")),
    )


def downgrade() -> None:
    op.drop_table("schema_migration_holds")
