"""environments: classification, managed, 8-digit colours; accounts: settings; contexts (expand)

What the smplkit SDK's platform and account clients read and write under
/api/v1: an environment's classification (STANDARD or AD_HOC) and managed
flag, colours as #rgb, #rrggbb or #rrggbbaa (so the column widens from 7 to 9
characters: a catalog-only change for varchar), the account's settings (an
opaque JSON object), and the contexts (environments, services, ...) SDKs
report in use.

Expand-only: the new columns have constant defaults (no rewrite), the
previous release never writes them, and its colours (#rrggbb) fit.

Revision ID: 0013_sdk_environments
Revises: 0012_config_item_types
Create Date: 2026-11-29 14:00:00+00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0013_sdk_environments"
down_revision: str | Sequence[str] | None = "0012_config_item_types"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "environments",
        sa.Column(
            "classification",
            sa.String(length=16),
            server_default=sa.text("'STANDARD'"),
            nullable=False,
        ),
    )
    op.add_column(
        "environments",
        sa.Column("managed", sa.Boolean(), server_default=sa.text("true"), nullable=False),
    )
    op.alter_column(
        "environments",
        "color",
        existing_type=sa.String(length=7),
        type_=sa.String(length=9),
        existing_nullable=True,
    )
    op.add_column(
        "accounts",
        sa.Column(
            "settings",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
    )
    op.create_table(
        "contexts",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("account_id", sa.UUID(), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=256), nullable=False),
        sa.Column(
            "attributes",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "last_seen_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("contexts_account_id_fkey"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("contexts_pkey")),
        sa.UniqueConstraint(
            "account_id", "type", "key", name=op.f("contexts_account_id_type_key_key")
        ),
    )


def downgrade() -> None:
    op.drop_table("contexts")
    op.drop_column("accounts", "settings")
    op.alter_column(
        "environments",
        "color",
        existing_type=sa.String(length=9),
        type_=sa.String(length=7),
        existing_nullable=True,
        postgresql_using="left(color, 7)",
    )
    op.drop_column("environments", "managed")
    op.drop_column("environments", "classification")
