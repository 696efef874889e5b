"""users: add auth_provider and auth_subject (expand)

First step of replacing users.cognito_sub. The columns are nullable so that
code still writing only cognito_sub keeps working during the rollout.

Revision ID: 0005_auth_identity_expand
Revises: 0004_api_keys_configs
Create Date: 2026-11-27 07:00:00+00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0005_auth_identity_expand"
down_revision: str | Sequence[str] | None = "0004_api_keys_configs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: a catalog-only change, no table rewrite.
    op.add_column("users", sa.Column("auth_provider", sa.String(length=64), nullable=True))
    op.add_column("users", sa.Column("auth_subject", sa.String(length=255), nullable=True))


def downgrade() -> None:
    op.drop_column("users", "auth_subject")
    op.drop_column("users", "auth_provider")
