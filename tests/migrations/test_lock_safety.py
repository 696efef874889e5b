"""The migration lock protects even a misconfigured fleet: a transaction-pooling
PgBouncer in front of the migration connection is refused (by settings, by the
pooler itself, or by the session's proof) and leaves no lock behind; an unlock
that finds no lock ends the stranded one; and migrators under different lock
names never run revisions at the same time."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from alembic_lockstep import lock
from alembic_lockstep.connections import create_migration_engine
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection

from service.bootstrap import migration_config
from tests.support.configs import eventually, scenario_config, settings_for, shared_folder
from tests.support.pgbouncer import MIGRATION_SESSION_PARAMETERS, pgbouncer
from tests.support.postgres import SLEEPING_MIGRATOR, advisory_locks, fetch_value, service_url
from tests.support.processes import ServiceProcess, run_python, service_environment
from tests.support.revisions import HEAD

# Every test here starts a real process or server.
pytestmark = pytest.mark.processes

SLOW = str(scenario_config("slow"))
SLOW_SCENARIO = {"ALEMBIC_CONFIG": SLOW, "TEST_SLOW_REVISION_SECONDS": "0"}


async def _version(url: URL) -> str:
    return str(await fetch_value(url, "SELECT version_num FROM alembic_version"))


def test_pooled_traffic_without_a_direct_migration_url_is_refused(migrated_database: URL) -> None:
    refused = run_python(
        "-m", "service", "migrate", url=migrated_database, DATABASE_POOLER="transaction"
    )
    assert refused.returncode == 2
    assert "DATABASE_POOLER is transaction but MIGRATION_DATABASE_URL is not set" in refused.stderr


@pytest.mark.parametrize(
    "pooler_passes_session_settings",
    [False, True],
    ids=["pooler-refuses-session-settings", "pooler-ignores-session-settings"],
)
@pytest.mark.parametrize(
    "direct_url", ["unset", "also-pooled"], ids=["no-migration-url", "pooled-migration-url"]
)
async def test_a_migration_through_a_transaction_pooler_fails_and_leaves_no_lock(
    migrated_database: URL, pooler_passes_session_settings: bool, direct_url: str
) -> None:
    ignored = MIGRATION_SESSION_PARAMETERS if pooler_passes_session_settings else ""
    with (
        shared_folder() as folder,
        pgbouncer(migrated_database, folder / "pgbouncer", ignore_parameters=ignored) as pooled,
    ):
        misconfigured = dict(SLOW_SCENARIO)
        if direct_url == "also-pooled":
            misconfigured.update(
                MIGRATION_DATABASE_URL=service_url(pooled), DATABASE_POOLER="transaction"
            )
        failed = run_python(
            "-m", "service", "migrate", url=pooled, timeout=60, environment=misconfigured
        )
    assert failed.returncode == 1, failed.stderr
    assert "migration failed (pooler)" in failed.stderr
    assert "point MIGRATION_DATABASE_URL at PostgreSQL itself" in failed.stderr
    assert await advisory_locks(migrated_database) == 0
    assert await _version(migrated_database) == HEAD
    # Nothing stays held: the correctly configured next release migrates.
    fixed = run_python(
        "-m",
        "service",
        "migrate",
        "--timeout",
        "30",
        url=migrated_database,
        environment=SLOW_SCENARIO,
    )
    assert fixed.returncode == 0, fixed.stderr
    assert await _version(migrated_database) == "test_slow"


async def test_a_server_behind_a_misconfigured_pooler_exits_instead_of_looping(
    migrated_database: URL, tmp_path: Path
) -> None:
    with (
        shared_folder() as folder,
        pgbouncer(
            migrated_database, folder / "pgbouncer", ignore_parameters=MIGRATION_SESSION_PARAMETERS
        ) as pooled,
    ):
        environment = service_environment(
            DATABASE_URL=service_url(pooled), ALEMBIC_CONFIG=SLOW, LOG_FORMAT="json"
        )
        process = ServiceProcess.service(environment, tmp_path / "pooled.log", "--workers", "2")
        assert process.exit_status() == 4, process.logs()
    assert "migration failed (pooler)" in process.logs()
    assert "died" not in process.logs()
    assert await advisory_locks(migrated_database) == 0


@asynccontextmanager
async def _locked_through_pgbouncer(
    database: URL, lock_name: str
) -> AsyncIterator[tuple[AsyncConnection, AsyncConnection, lock.MigrationLock]]:
    """A migration connection through PgBouncer (transaction mode) that took the
    lock, and another client of the same pool."""
    with (
        shared_folder() as folder,
        pgbouncer(
            database, folder / "pgbouncer", ignore_parameters=MIGRATION_SESSION_PARAMETERS
        ) as pooled,
    ):
        config = migration_config(settings_for(pooled, migration_lock_name=lock_name))
        migration_lock = lock.MigrationLock.of(config)
        engine = create_migration_engine(config)
        try:
            async with engine.connect() as migrator, engine.connect() as other_client:
                assert await lock._try_lock(migrator, migration_lock)
                yield migrator, other_client, migration_lock
                # Either may be on the server session the test ended (PgBouncer
                # chooses): neither is rolled back on a closed connection.
                await other_client.invalidate()
                await migrator.invalidate()
        finally:
            await engine.dispose()


async def test_an_unlock_on_another_server_session_ends_the_stranded_lock(
    migrated_database: URL,
) -> None:
    """Through a pooler, the unlock runs on whichever server session is free: it
    returns false, and the session that kept the lock is ended."""
    async with _locked_through_pgbouncer(migrated_database, "stranded-lock-test") as (
        migrator,
        other_client,
        migration_lock,
    ):
        # Another client's transaction now runs on the server session that holds
        # the lock (PgBouncer hands out the last one released), so the unlock
        # runs on another one.
        await other_client.scalar(text("SELECT pg_backend_pid()"))
        assert await advisory_locks(migrated_database) == 1
        assert await lock.release(migrator, migration_lock) is False
        # Ended with its server session, while the other client's transaction
        # is still open on it (pg_terminate_backend signals the session; it
        # ends a moment later).
        await eventually(lambda: _no_advisory_locks(migrated_database), within=30)


async def test_a_revision_on_another_server_session_than_the_lock_is_refused(
    migrated_database: URL,
) -> None:
    """The check each revision makes in its transaction before it commits."""
    async with _locked_through_pgbouncer(migrated_database, "revision-session-test") as (
        migrator,
        other_client,
        migration_lock,
    ):
        await migrator.run_sync(lock.check_session)  # still on its server session
        await migrator.rollback()
        # The lock's server session is busy with another client: the migrator's
        # next transaction runs elsewhere.
        await other_client.scalar(text("SELECT 1"))
        with pytest.raises(lock.NotARealSession, match="this revision ran on server session"):
            await migrator.run_sync(lock.check_session)
        await migrator.rollback()
        assert await lock.release(migrator, migration_lock) is False
    # The lock's server session was ended by the release (as above), a moment
    # later on a busy machine: CI on PostgreSQL 15 once found it still held.
    await eventually(lambda: _no_advisory_locks(migrated_database), within=30)


async def _no_advisory_locks(database: URL) -> bool:
    return await advisory_locks(database) == 0


async def test_migrators_under_different_lock_names_never_migrate_at_once(
    migrated_database: URL, tmp_path: Path
) -> None:
    environment = service_environment(
        DATABASE_URL=service_url(migrated_database),
        ALEMBIC_CONFIG=SLOW,
        TEST_SLOW_REVISION_SECONDS="15",
        LOG_FORMAT="json",
    )
    migrate = ["-m", "service", "migrate", "--timeout", "60"]
    status = ["-m", "service", "db", "status", "--json"]
    first = ServiceProcess(migrate, {**environment, "MIGRATION_LOCK_NAME": "a"}, tmp_path / "a.log")
    started = [first]
    try:
        await eventually(lambda: _slow_revision_running(migrated_database))
        # While the first one sleeps in its revision: `db status` under another
        # lock name (before the second migrator takes lock "b", which would make
        # that one the holder it reports), then another service's migrator.
        shown = ServiceProcess(
            status, {**environment, "MIGRATION_LOCK_NAME": "b"}, tmp_path / "s.log"
        )
        started.append(shown)
        shown_code = shown.wait(60)
        second = ServiceProcess(
            migrate, {**environment, "MIGRATION_LOCK_NAME": "b"}, tmp_path / "b.log"
        )
        started.append(second)
        codes = [first.wait(60), shown_code, second.wait(60)]
    finally:
        for process in started:
            process.stop()
    assert codes == [0, 0, 0], first.logs() + second.logs() + shown.logs()
    assert "under another lock name" in second.logs()
    report = shown.logs()
    holder = json.loads(report[report.index("{\n") :])["lock_holder"]
    assert holder["other_lock_name"] is True
    assert f"pid={first.pid}" in holder["application_name"]
    applied = "SELECT count(*) FROM schema_migration_audit WHERE revision = 'test_slow'"
    assert await fetch_value(migrated_database, applied) == 1


async def _slow_revision_running(url: URL) -> bool:
    return bool(await fetch_value(url, SLEEPING_MIGRATOR))
