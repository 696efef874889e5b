"""The cognito_sub data migration on 100,000 users: upgrade, check every row,
downgrade, check again."""

from __future__ import annotations

import math

import asyncpg
import pytest
from sqlalchemy.engine import URL

from tests.support.postgres import connect
from tests.support.processes import run_python
from tests.support.revisions import HEAD
from tests.support.seeds import BEFORE_IDENTITY, seed_users_sql

# Every test here starts a real process or server.
pytestmark = pytest.mark.processes

BEFORE = BEFORE_IDENTITY
USERS = 100_000
BATCH = 5_000

SEED = seed_users_sql(USERS)


def run(*arguments: str, url: URL) -> str:
    result = run_python(*arguments, url=url, timeout=600, BACKFILL_BATCH_SIZE=str(BATCH))
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


async def test_cognito_sub_becomes_provider_and_subject_and_back(empty_database: URL) -> None:
    run("-m", "alembic", "upgrade", BEFORE, url=empty_database)
    connection = await connect(empty_database)
    await connection.execute(SEED)
    original = {
        row["id"]: (row["email"], row["cognito_sub"])
        for row in await connection.fetch("SELECT id, email, cognito_sub FROM users")
    }
    lowered = {
        row["id"]: row["lower"]
        for row in await connection.fetch("SELECT id, lower(email) FROM users")
    }
    assert len(original) == USERS
    await connection.close()

    # Through the service's own bootstrap, as a deploy would run it.
    run("-m", "service", "migrate", url=empty_database)
    connection = await connect(empty_database)
    rows = await connection.fetch("SELECT id, email, auth_provider, auth_subject FROM users")
    assert len(rows) == USERS
    for row in rows:
        email, cognito_sub = original[row["id"]]
        assert row["email"] == email
        if cognito_sub is not None and cognito_sub.strip():
            assert (row["auth_provider"], row["auth_subject"]) == ("cognito", cognito_sub), row
        else:
            assert (row["auth_provider"], row["auth_subject"]) == ("email", lowered[row["id"]]), row
    await _assert_contracted(connection)
    # Batches, each its own transaction: the backfilled row versions carry one
    # transaction id per batch.
    transactions = await connection.fetchval("SELECT count(DISTINCT xmin::text) FROM users")
    assert transactions == math.ceil(USERS / BATCH)
    # The backfill wakes autovacuum on users, whose lock the downgrade's DDL
    # needs and which yields only after deadlock_timeout (1 s): the alembic
    # command line retries a revision that hits lock_timeout, as the bootstrap
    # does (tests/migrations/test_cli.py).
    await connection.close()

    run("-m", "alembic", "downgrade", BEFORE, url=empty_database)
    connection = await connect(empty_database)
    restored = {
        row["id"]: (row["email"], row["cognito_sub"])
        for row in await connection.fetch("SELECT id, email, cognito_sub FROM users")
    }
    expected = {
        user_id: (email, cognito_sub if cognito_sub is not None and cognito_sub.strip() else None)
        for user_id, (email, cognito_sub) in original.items()
    }
    assert restored == expected
    columns = {
        row["column_name"]
        for row in await connection.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'users'"
        )
    }
    assert "auth_provider" not in columns
    assert (
        await connection.fetchval(
            "SELECT conname FROM pg_constraint WHERE conname = 'users_cognito_sub_key'"
        )
        == "users_cognito_sub_key"
    )
    await connection.close()

    # And forward again, to head.
    run("-m", "alembic", "upgrade", "head", url=empty_database)
    connection = await connect(empty_database)
    assert await connection.fetchval("SELECT version_num FROM alembic_version") == HEAD
    await connection.close()


async def _assert_contracted(connection: asyncpg.Connection) -> None:
    columns = {
        row["column_name"]: row["is_nullable"]
        for row in await connection.fetch(
            "SELECT column_name, is_nullable FROM information_schema.columns WHERE table_name = 'users'"
        )
    }
    assert "cognito_sub" not in columns
    assert columns["auth_provider"] == columns["auth_subject"] == "NO"
    index = await connection.fetchrow(
        """
        SELECT i.indisunique, i.indisvalid, pg_get_indexdef(i.indexrelid) AS definition
          FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
         WHERE c.relname = 'users_account_id_auth_provider_auth_subject_key'
        """
    )
    assert index["indisunique"]
    assert index["indisvalid"]
    assert "(account_id, auth_provider, auth_subject)" in index["definition"]
    leftovers = await connection.fetchval(
        "SELECT count(*) FROM pg_constraint WHERE conname LIKE 'users_%_not_null_check'"
    )
    assert leftovers == 0
