"""flags, flag_sources, usage_counts (expand)

Feature flags in the smplkit SDK's shape (service/flags/), the services that
declared them (discovery), and SDK telemetry summed per account and day.

Expand-only: three new tables; the previous release never reads or writes them.

Revision ID: 0015_flags
Revises: 0014_migration_holds
Create Date: 2026-12-06 15:00:00+00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0015_flags"
down_revision: str | Sequence[str] | None = "0014_migration_holds"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "flags",
        sa.Column("account_id", sa.UUID(), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("default", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("allowed_values", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "environments",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("managed", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(
            "type IN ('BOOLEAN', 'STRING', 'NUMERIC', 'JSON')", name=op.f("flags_type_check")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("flags_account_id_fkey"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("flags_pkey")),
        sa.UniqueConstraint("account_id", "key", name=op.f("flags_account_id_key_key")),
    )
    op.create_table(
        "flag_sources",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("flag_id", sa.UUID(), nullable=False),
        sa.Column("service", sa.String(length=200), nullable=False),
        sa.Column("environment", sa.String(length=200), nullable=False),
        sa.Column("declared_type", sa.String(length=16), nullable=False),
        sa.Column("declared_default", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "first_observed",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.Column(
            "last_seen", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["flag_id"], ["flags.id"], name=op.f("flag_sources_flag_id_fkey"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("flag_sources_pkey")),
        sa.UniqueConstraint(
            "flag_id",
            "service",
            "environment",
            name=op.f("flag_sources_flag_id_service_environment_key"),
        ),
    )
    op.create_table(
        "usage_counts",
        sa.Column("account_id", sa.UUID(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("metric", sa.String(length=128), nullable=False),
        sa.Column("subject", sa.String(length=128), nullable=False),
        sa.Column("total", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("usage_counts_account_id_fkey"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "account_id", "day", "metric", "subject", name=op.f("usage_counts_pkey")
        ),
    )


def downgrade() -> None:
    op.drop_table("usage_counts")
    op.drop_table("flag_sources")
    op.drop_table("flags")
