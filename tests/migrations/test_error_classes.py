"""Errors are classified by what they mean: only a lost or refused connection is
waited out; a statement timeout, a cancel, a failed authentication, a missing
database are final and reported as what they are; a connection lost in the
middle of a revision is retried a bounded number of times. (A refused
connection: tests/migrations/test_faults.py, the database down at start.)"""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from alembic_lockstep.bootstrap import CONNECTION_LOSSES_WHILE_MIGRATING
from alembic_lockstep.errors import failure_kind
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from tests.support.configs import eventually, scenario_config, settings_for
from tests.support.postgres import (
    SLEEPING_MIGRATOR,
    advisory_locks,
    attempts,
    connect,
    count_attempts,
    fetch_value,
)
from tests.support.processes import run_python
from tests.support.readiness import running_app, wait_for_phase
from tests.support.revisions import HEAD

SLOW = scenario_config("slow")


@pytest.fixture
def slow_revision(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SLOW_REVISION_SECONDS", "60")


async def _signal_the_migrator(url: URL, function: str) -> None:
    """Once a backend runs the slow revision's pg_sleep: cancel or terminate it."""
    migrator = await eventually(lambda: fetch_value(url, SLEEPING_MIGRATOR))
    assert await fetch_value(url, f"SELECT {function}($1)", migrator)


async def _assert_left_as_it_was(url: URL) -> None:
    assert await fetch_value(url, "SELECT version_num FROM alembic_version") == HEAD
    assert await fetch_value(url, "SELECT to_regclass('slow_marker')") is None
    assert await advisory_locks(url) == 0


@pytest.mark.usefixtures("slow_revision")
async def test_a_statement_timeout_is_final(migrated_database: URL) -> None:
    await count_attempts(migrated_database)
    settings = settings_for(migrated_database, alembic_config=SLOW, migration_statement_timeout=0.5)
    async with running_app(settings) as client:
        body = await wait_for_phase(client, "failed")
    assert body["failure"] == "statement_timeout"
    assert "MIGRATION_STATEMENT_TIMEOUT" in body["error"]
    assert "revision test_slow failed" in body["error"]
    assert "57014" in body["error"]
    assert await attempts(migrated_database) == 1
    await _assert_left_as_it_was(migrated_database)


@pytest.mark.usefixtures("slow_revision")
async def test_an_operators_cancel_stops_the_migration(migrated_database: URL) -> None:
    await count_attempts(migrated_database)
    async with running_app(settings_for(migrated_database, alembic_config=SLOW)) as client:
        await _signal_the_migrator(migrated_database, "pg_cancel_backend")
        body = await wait_for_phase(client, "failed")
    assert body["failure"] == "cancelled"
    assert "pg_cancel_backend" in body["error"]
    assert await attempts(migrated_database) == 1
    await _assert_left_as_it_was(migrated_database)


@pytest.mark.usefixtures("slow_revision")
async def test_a_connection_lost_mid_revision_is_retried_a_bounded_number_of_times(
    migrated_database: URL,
) -> None:
    await count_attempts(migrated_database)
    async with running_app(settings_for(migrated_database, alembic_config=SLOW)) as client:
        for _ in range(CONNECTION_LOSSES_WHILE_MIGRATING):
            await _signal_the_migrator(migrated_database, "pg_terminate_backend")
        body = await wait_for_phase(client, "failed")
    assert body["failure"] == "connection_lost"
    assert f"lost {CONNECTION_LOSSES_WHILE_MIGRATING} times while migrating" in body["error"]
    assert await attempts(migrated_database) == CONNECTION_LOSSES_WHILE_MIGRATING
    await _assert_left_as_it_was(migrated_database)


@pytest.mark.processes
def test_a_wrong_password_fails_migrate_instead_of_waiting(migrated_database: URL) -> None:
    wrong = migrated_database.set(password="not-the-password")
    # Bounded: the command must end by itself (before this fix it waited forever).
    failed = run_python("-m", "service", "migrate", url=wrong, timeout=60)
    assert failed.returncode == 1, failed.stderr
    assert "authentication_failed" in failed.stderr
    assert "28P01" in failed.stderr
    assert "not-the-password" not in failed.stderr + failed.stdout


async def test_a_missing_database_is_final(admin_url: URL) -> None:
    missing = admin_url.set(database=f"missing_{uuid.uuid4().hex[:8]}")
    async with running_app(settings_for(missing)) as client:
        body = await wait_for_phase(client, "failed")
    assert body["failure"] == "missing_database"
    assert "3D000" in body["error"]


@pytest.mark.processes
async def test_tls_required_of_a_server_without_tls_is_final(migrated_database: URL) -> None:
    """sslmode=require against a server that answers "no TLS here" will not
    get better by waiting: a final `tls` failure, not "waiting for the database"."""
    if await fetch_value(migrated_database, "SHOW ssl") == "on":
        pytest.skip("this server speaks TLS (the embedded PostgreSQL, built without it, does not)")
    required = migrated_database.update_query_dict({"sslmode": "require"})
    failed = run_python("-m", "service", "migrate", url=required, timeout=60)
    assert failed.returncode == 1, failed.stderr
    assert "migration failed (tls)" in failed.stderr
    assert "rejected SSL upgrade" in failed.stderr


@pytest.mark.parametrize(
    "statements",
    [
        ("PREPARE shared AS SELECT 1", "PREPARE shared AS SELECT 1"),
        ("EXECUTE never_prepared",),
    ],
    ids=["already there (42P05)", "gone (26000)"],
)
async def test_a_prepared_statement_shared_or_lost_is_a_pooler(
    migrated_database: URL, statements: tuple[str, ...]
) -> None:
    """What a transaction-pooling pooler in front of a session that caches
    prepared statements shows first, on a busy machine before the
    migration session's own check: the real server errors, named a pooler."""
    connection = await connect(migrated_database)
    try:
        *before, failing = statements
        for statement in before:
            await connection.execute(statement)
        with pytest.raises(asyncpg.PostgresError) as raised:
            await connection.execute(failing)
    finally:
        await connection.close()
    assert failure_kind(raised.value) == "pooler"
    assert failure_kind(DBAPIError.instance("", None, raised.value, Exception)) == "pooler"
