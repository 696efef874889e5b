"""create api_keys and configs

Revision ID: 0004_api_keys_configs
Revises: 0003_environments
Create Date: 2026-11-27 07:00:00+00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0004_api_keys_configs"
down_revision: str | Sequence[str] | None = "0003_environments"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamps() -> list[sa.Column[object]]:
    return [
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
    ]


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("account_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("secret_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        *_timestamps(),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("api_keys_account_id_fkey"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("api_keys_user_id_fkey"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("api_keys_pkey")),
        sa.UniqueConstraint("secret_hash", name=op.f("api_keys_secret_hash_key")),
    )
    op.create_index(
        "api_keys_account_id_created_at_id_idx", "api_keys", ["account_id", "created_at", "id"]
    )
    op.create_index(op.f("api_keys_user_id_idx"), "api_keys", ["user_id"])
    op.create_table(
        "configs",
        sa.Column("account_id", sa.UUID(), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("parent_id", sa.UUID(), nullable=True),
        sa.Column(
            "items",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "environments",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        *_timestamps(),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("configs_account_id_fkey"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["configs.id"], name=op.f("configs_parent_id_fkey"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("configs_pkey")),
        sa.UniqueConstraint("account_id", "key", name=op.f("configs_account_id_key_key")),
    )
    op.create_index(
        "configs_account_id_created_at_id_idx", "configs", ["account_id", "created_at", "id"]
    )
    op.create_index(
        "configs_items_idx",
        "configs",
        ["items"],
        postgresql_using="gin",
        postgresql_ops={"items": "jsonb_path_ops"},
    )
    op.create_index(op.f("configs_parent_id_idx"), "configs", ["parent_id"])


def downgrade() -> None:
    op.drop_table("configs")
    op.drop_table("api_keys")
