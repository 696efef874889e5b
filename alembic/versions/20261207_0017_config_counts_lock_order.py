"""config_counts: the triggers take the account's quota lock first, and a TRUNCATE empties the counts (expand)

Revision 0016's triggers locked an account's row of config_counts without
the account's quota lock (the advisory lock of service/quotas.py: 0x51554F01
and the hash of the account id's text). Discovery inserts its batch before
it asks for that lock, so its insert's trigger held the row while it waited
for the lock, which a create held while it waited for the row: a deadlock,
answered 503. The triggers now take the account's quota lock before its
row, so every writer (this release's and the previous one's) takes the two
in one order. A TRUNCATE of configs left the counts behind; it now empties
them.

Expand-only: the trigger functions replaced in place (CREATE OR REPLACE:
the triggers keep calling them), and one more trigger. What bypasses
triggers (session_replication_role = replica) leaves the counts behind:
docs/operations/settings.md says how to count again.

Revision ID: 0017_config_counts_lock_order
Revises: 0016_config_counts
Create Date: 2026-12-07 06:40:00+00:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017_config_counts_lock_order"
down_revision: str | Sequence[str] | None = "0016_config_counts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The quota's advisory lock of configs (service/quotas.py: _LOCK_SPACE + 1).
QUOTA_LOCK = 0x51554F01
# One statement's rows at a time (transition tables), accounts in order, so two
# statements of several accounts each take the locks alike; each account's
# quota lock before its row.
_ADDED = f"""
CREATE OR REPLACE FUNCTION config_counts_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock({QUOTA_LOCK}, hashtext(account_id::text))
       FROM (SELECT DISTINCT account_id FROM added ORDER BY account_id) AS accounts;
    INSERT INTO config_counts AS counts (account_id, held)
    SELECT account_id, count(*) FROM added GROUP BY account_id ORDER BY account_id
    ON CONFLICT (account_id) DO UPDATE SET held = counts.held + excluded.held;
    RETURN NULL;
END
$$
"""
_REMOVED = f"""
CREATE OR REPLACE FUNCTION config_counts_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock({QUOTA_LOCK}, hashtext(account_id::text))
       FROM (SELECT DISTINCT account_id FROM removed ORDER BY account_id) AS accounts;
    UPDATE config_counts AS counts SET held = counts.held - removed_counts.held
      FROM (SELECT account_id, count(*) AS held FROM removed GROUP BY account_id) AS removed_counts
     WHERE counts.account_id = removed_counts.account_id;
    RETURN NULL;
END
$$
"""


# Revision 0016's functions, for the downgrade.
_ADDED_0016 = """
CREATE OR REPLACE FUNCTION config_counts_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO config_counts AS counts (account_id, held)
    SELECT account_id, count(*) FROM added GROUP BY account_id ORDER BY account_id
    ON CONFLICT (account_id) DO UPDATE SET held = counts.held + excluded.held;
    RETURN NULL;
END
$$
"""
_REMOVED_0016 = """
CREATE OR REPLACE FUNCTION config_counts_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE config_counts AS counts SET held = counts.held - removed_counts.held
      FROM (SELECT account_id, count(*) AS held FROM removed GROUP BY account_id) AS removed_counts
     WHERE counts.account_id = removed_counts.account_id;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.execute(_ADDED)
    op.execute(_REMOVED)
    # OR REPLACE: a database that ran 0016 as 77f68f9 had edited it (with this
    # lock order and this trigger already, alembic/edited.toml) ends the same.
    op.execute(
        "CREATE OR REPLACE FUNCTION config_counts_truncated() RETURNS trigger"
        " LANGUAGE plpgsql AS $$ BEGIN DELETE FROM config_counts; RETURN NULL; END $$"
    )
    op.execute(
        "CREATE OR REPLACE TRIGGER configs_counted_truncates AFTER TRUNCATE ON configs"
        " FOR EACH STATEMENT EXECUTE FUNCTION config_counts_truncated()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER configs_counted_truncates ON configs")
    op.execute("DROP FUNCTION config_counts_truncated()")
    op.execute(_REMOVED_0016)
    op.execute(_ADDED_0016)
