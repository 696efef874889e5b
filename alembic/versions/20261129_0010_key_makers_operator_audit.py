"""api_keys: who made each key and the role it is capped at; operator_audit (expand)

A key acts with its user's role capped at max_role, the role its maker had
when it was made. Expand-only, so the previous release runs on this schema
during a rolling deploy: both columns are nullable and that code never writes
them; a key without a cap acts with its user's role, as before.

Existing keys get their user's present role as their cap (nobody recorded
their makers): from now on they never gain a later promotion. The backfill
runs in batches of BATCH_SIZE keys, each its own transaction, and resumes
where a killed migrator stopped (only keys still without a cap are touched).
The foreign key and the check are added NOT VALID and validated afterwards,
and the index is built concurrently, so writers are never blocked for a scan.

The autocommit block commits what comes before it, while the revision is not
yet recorded: a migrator killed after that point runs the revision again from
the start, so every step before the block can be repeated (IF NOT EXISTS, and
constraints dropped if present before they are added again, NOT VALID).

operator_audit records the operator's command-line actions on accounts.

Revision ID: 0010_key_makers_operator_audit
Revises: 0009_migration_audit
Create Date: 2026-11-29 08:00:00+00:00

"""

import os
from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0010_key_makers_operator_audit"
down_revision: str | Sequence[str] | None = "0009_migration_audit"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH_SIZE = int(os.environ.get("BACKFILL_BATCH_SIZE", "5000"))
FIRST_ID = "00000000-0000-0000-0000-000000000000"
INDEX = "api_keys_created_by_user_id_idx"
FOREIGN_KEY = "api_keys_created_by_user_id_fkey"
CHECK = "api_keys_max_role_check"

CAP_BATCH = sa.text(
    """
    WITH batch AS (
        SELECT id FROM api_keys WHERE id > CAST(:after AS uuid) ORDER BY id LIMIT :size
    ), capped AS (
        UPDATE api_keys AS k
           SET max_role = u.role
          FROM batch, users AS u
         WHERE k.id = batch.id AND u.id = k.user_id AND k.max_role IS NULL
        RETURNING k.id
    )
    SELECT (SELECT id FROM batch ORDER BY id DESC LIMIT 1) AS last_id,
           (SELECT count(*) FROM capped) AS capped
    """
)


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
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("database_user", sa.String(length=128), nullable=False),
        sa.Column("app_version", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("operator_audit_pkey")),
        if_not_exists=True,
    )
    op.create_index(
        "operator_audit_account_id_at_idx",
        "operator_audit",
        ["account_id", "at"],
        if_not_exists=True,
    )
    # Nullable, no default: catalog-only changes, no table rewrite.
    op.add_column(
        "api_keys", sa.Column("created_by_user_id", sa.UUID(), nullable=True), if_not_exists=True
    )
    op.add_column(
        "api_keys", sa.Column("max_role", sa.String(length=16), nullable=True), if_not_exists=True
    )
    op.execute(
        sa.text(
            f"ALTER TABLE api_keys DROP CONSTRAINT IF EXISTS {FOREIGN_KEY}, "
            f"ADD CONSTRAINT {FOREIGN_KEY} FOREIGN KEY (created_by_user_id) "
            "REFERENCES users (id) ON DELETE SET NULL NOT VALID"
        )
    )
    op.execute(
        sa.text(
            f"ALTER TABLE api_keys DROP CONSTRAINT IF EXISTS {CHECK}, ADD CONSTRAINT {CHECK} "
            "CHECK (max_role IN ('OWNER', 'ADMIN', 'MEMBER', 'VIEWER')) NOT VALID"
        )
    )
    with op.get_context().autocommit_block():
        _cap_existing_keys()
        # A build that was killed leaves an INVALID index of this name behind.
        op.execute(sa.text(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}"))
        op.execute(sa.text(f"CREATE INDEX CONCURRENTLY {INDEX} ON api_keys (created_by_user_id)"))
    op.execute(sa.text(f"ALTER TABLE api_keys VALIDATE CONSTRAINT {FOREIGN_KEY}"))
    op.execute(sa.text(f"ALTER TABLE api_keys VALIDATE CONSTRAINT {CHECK}"))


def _cap_existing_keys() -> None:
    connection = op.get_bind()
    after = FIRST_ID
    while True:
        last_id, _ = connection.execute(CAP_BATCH, {"after": after, "size": BATCH_SIZE}).one()
        if last_id is None:
            return
        after = str(last_id)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(sa.text(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}"))
    op.drop_constraint(op.f(CHECK), "api_keys", type_="check")
    op.drop_constraint(op.f(FOREIGN_KEY), "api_keys", type_="foreignkey")
    op.drop_column("api_keys", "max_role")
    op.drop_column("api_keys", "created_by_user_id")
    op.drop_index("operator_audit_account_id_at_idx", table_name="operator_audit")
    op.drop_table("operator_audit")
