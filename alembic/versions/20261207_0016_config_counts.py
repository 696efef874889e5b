"""config_counts, kept by triggers on configs (expand)

How many configs each account holds, kept by the database: a statement-level
trigger after each INSERT on configs adds the rows it inserted, one after
each DELETE subtracts the rows it deleted. The counts start from the configs
already stored, counted in this revision's transaction, after the triggers
are made: CREATE TRIGGER takes a lock on configs that waits for the writes
in flight and holds off new ones until this transaction commits, so no
write falls between the count and the triggers. Writes to configs wait for
that count (a scan of the account_id index; the migration's lock_timeout
bounds the wait for the lock, not the count).

A create checks its account's quota against the count, in its own statement
(service/configs/store.py), instead of counting the account's configs under
a lock held until its commit.

Expand-only: a new table and triggers. The previous release never reads the
table; its inserts and deletes of configs fire the triggers like this
release's, so the counts stay right through a rolling deploy. Its quota
check (the account's configs counted under an advisory lock) still holds:
this release's create takes the same lock in its statement.

Revision ID: 0016_config_counts
Revises: 0015_flags
Create Date: 2026-12-07 06:00:00+00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0016_config_counts"
down_revision: str | Sequence[str] | None = "0015_flags"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# One statement's rows at a time (transition tables), accounts in order, so two
# statements of several accounts each take the counts' row locks alike.
_ADDED = """
CREATE FUNCTION config_counts_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO config_counts AS counts (account_id, held)
    SELECT account_id, count(*) FROM added GROUP BY account_id ORDER BY account_id
    ON CONFLICT (account_id) DO UPDATE SET held = counts.held + excluded.held;
    RETURN NULL;
END
$$
"""
_REMOVED = """
CREATE FUNCTION config_counts_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE config_counts AS counts SET held = counts.held - removed_counts.held
      FROM (SELECT account_id, count(*) AS held FROM removed GROUP BY account_id) AS removed_counts
     WHERE counts.account_id = removed_counts.account_id;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "config_counts",
        sa.Column("account_id", sa.UUID(), nullable=False),
        sa.Column("held", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("config_counts_account_id_fkey"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("config_counts_pkey")),
    )
    op.execute(_ADDED)
    op.execute(_REMOVED)
    op.execute(
        "CREATE TRIGGER configs_counted_inserts AFTER INSERT ON configs"
        " REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION config_counts_added()"
    )
    op.execute(
        "CREATE TRIGGER configs_counted_deletes AFTER DELETE ON configs"
        " REFERENCING OLD TABLE AS removed"
        " FOR EACH STATEMENT EXECUTE FUNCTION config_counts_removed()"
    )
    op.execute(
        "INSERT INTO config_counts (account_id, held)"
        " SELECT account_id, count(*) FROM configs GROUP BY account_id"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER configs_counted_deletes ON configs")
    op.execute("DROP TRIGGER configs_counted_inserts ON configs")
    op.execute("DROP FUNCTION config_counts_removed()")
    op.execute("DROP FUNCTION config_counts_added()")
    op.drop_table("config_counts")
