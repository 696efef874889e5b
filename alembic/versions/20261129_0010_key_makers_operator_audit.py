"""api_keys: who made each key and the role it is capped at; operator_audit (expand)

A key acts with its user's role capped at max_role, the role its maker had
when it was made. Expand-only, so the previous release runs on this schema
during a rolling deploy: both columns are nullable and that code never writes
them; a key without a cap acts with its user's role, as before. The foreign
key and the check are added NOT VALID (no scan under the lock);
0011_key_caps_backfill validates them, in transactions of their own.

operator_audit records the operator's command-line actions on accounts.

Revision ID: 0010_key_makers_operator_audit
Revises: 0009_migration_audit
Create Date: 2026-11-29 08:00:00+00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0010_key_makers_operator_audit"
down_revision: str | Sequence[str] | None = "0009_migration_audit"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FOREIGN_KEY = "api_keys_created_by_user_id_fkey"
CHECK = "api_keys_max_role_check"


def upgrade() -> None:
    op.create_table(
        "operator_audit",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.UUID(), nullable=True),
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column("api_key_id", sa.UUID(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("operator", sa.String(length=128), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.BigInteger(), nullable=False),
        sa.Column("database_user", sa.String(length=128), nullable=False),
        sa.Column("app_version", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("operator_audit_pkey")),
    )
    op.create_index("operator_audit_account_id_at_idx", "operator_audit", ["account_id", "at"])
    # Nullable, no default: catalog-only changes, no table rewrite.
    op.add_column("api_keys", sa.Column("created_by_user_id", sa.UUID(), nullable=True))
    op.add_column("api_keys", sa.Column("max_role", sa.String(length=16), nullable=True))
    op.execute(
        sa.text(
            f"ALTER TABLE api_keys ADD CONSTRAINT {FOREIGN_KEY} FOREIGN KEY (created_by_user_id) "
            "REFERENCES users (id) ON DELETE SET NULL NOT VALID"
        )
    )
    op.execute(
        sa.text(
            f"ALTER TABLE api_keys ADD CONSTRAINT {CHECK} "
            "CHECK (max_role IN ('OWNER', 'ADMIN', 'MEMBER', 'VIEWER')) NOT VALID"
        )
    )


def downgrade() -> None:
    op.drop_constraint(op.f(CHECK), "api_keys", type_="check")
    op.drop_constraint(op.f(FOREIGN_KEY), "api_keys", type_="foreignkey")
    op.drop_column("api_keys", "max_role")
    op.drop_column("api_keys", "created_by_user_id")
    op.drop_index("operator_audit_account_id_at_idx", table_name="operator_audit")
    op.drop_table("operator_audit")
