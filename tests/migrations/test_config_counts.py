"""Revisions 0016 and 0017: each account's count of configs starts from the configs
stored before it, the database keeps it through inserts and deletes of
several rows at once (whichever release writes them), and it goes on
downgrade."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.engine import URL

from service.quotas import AccountQuotas, Kind
from tests.support.postgres import connect
from tests.support.processes import run_python

# Every test here starts a real process.
pytestmark = pytest.mark.processes

BEFORE = "0015_flags"
SEED = """
WITH accounts AS (
    INSERT INTO accounts (name) SELECT 'Seed ' || n FROM generate_series(1, 3) AS n RETURNING id, name
)
INSERT INTO configs (account_id, key, name)
SELECT accounts.id, 'config-' || i, 'Config ' || i
  FROM accounts, generate_series(1, 100) AS i
 WHERE i <= 40 * right(accounts.name, 1)::int
"""
COUNTS = """
SELECT a.name, coalesce(c.held, 0) AS held, (SELECT count(*) FROM configs WHERE account_id = a.id) AS stored
  FROM accounts AS a LEFT JOIN config_counts AS c ON c.account_id = a.id ORDER BY a.name
"""


def run(*arguments: str, url: URL) -> None:
    result = run_python(*arguments, url=url, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


async def test_counts_start_from_the_stored_configs_and_follow_every_write(
    empty_database: URL,
) -> None:
    run("-m", "alembic", "upgrade", BEFORE, url=empty_database)
    connection = await connect(empty_database)
    try:
        await connection.execute(SEED)
    finally:
        await connection.close()

    run("-m", "alembic", "upgrade", "head", url=empty_database)
    connection = await connect(empty_database)
    try:
        counts = [tuple(row) for row in await connection.fetch(COUNTS)]
        assert counts == [("Seed 1", 40, 40), ("Seed 2", 80, 80), ("Seed 3", 100, 100)]
        # Statements of many rows and of several accounts, as the previous
        # release (which knows nothing of the counts) would write them.
        await connection.execute(
            "DELETE FROM configs WHERE key LIKE 'config-1%' OR key = 'config-2'"
        )
        await connection.execute(
            "INSERT INTO configs (account_id, key, name)"
            " SELECT id, 'added-' || n, 'Added' FROM accounts, generate_series(1, 7) AS n"
        )
        async with connection.transaction():
            await connection.execute("DELETE FROM configs WHERE key = 'added-1'")
            await connection.execute(
                "INSERT INTO configs (account_id, key, name)"
                " SELECT id, 'again', 'Again' FROM accounts WHERE name = 'Seed 1'"
            )
        # A rolled back insert counts nothing.
        rolled_back = connection.transaction()
        await rolled_back.start()
        await connection.execute(
            "INSERT INTO configs (account_id, key, name) SELECT id, 'lost', 'Lost' FROM accounts"
        )
        await rolled_back.rollback()
        rows = await connection.fetch(COUNTS)
        assert all(row["held"] == row["stored"] for row in rows), rows
        assert [row["stored"] for row in rows] != [40, 80, 100]
        # The triggers take the account's quota lock (the service's) before
        # its count: an insert waits for a create that holds it.
        account_id = await connection.fetchval("SELECT id FROM accounts WHERE name = 'Seed 1'")
        holder = await connect(empty_database)
        try:
            async with holder.transaction():
                await holder.execute(
                    "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                    AccountQuotas.lock_space(Kind.CONFIGS),
                    str(account_id),
                )
                await connection.execute("SET lock_timeout = '200ms'")
                with pytest.raises(asyncpg.LockNotAvailableError):
                    await connection.execute(
                        "INSERT INTO configs (account_id, key, name) VALUES ($1, 'wait', 'W')",
                        account_id,
                    )
                await connection.execute("RESET lock_timeout")
        finally:
            await holder.close()
        # A TRUNCATE empties the counts.
        await connection.execute("TRUNCATE configs")
        assert await connection.fetchval("SELECT count(*) FROM config_counts") == 0
        await connection.execute(SEED.replace("'Seed '", "'Again '"))
        rows = await connection.fetch(COUNTS)
        assert all(row["held"] == row["stored"] for row in rows), rows
        # An account deleted takes its configs and its count with it.
        await connection.execute("DELETE FROM accounts WHERE name = 'Again 2'")
        assert await connection.fetchval("SELECT count(*) FROM config_counts") == 2
    finally:
        await connection.close()

    run("-m", "alembic", "downgrade", BEFORE, url=empty_database)
    connection = await connect(empty_database)
    try:
        assert await connection.fetchval("SELECT to_regclass('config_counts')") is None
        triggers = await connection.fetchval(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'configs'::regclass"
            " AND NOT tgisinternal"
        )
        assert triggers == 0
        await connection.execute(
            "INSERT INTO configs (account_id, key, name) SELECT id, 'after', 'After' FROM accounts"
        )
    finally:
        await connection.close()
