"""The command line: `python -m service migrate`, `db status`, and the `alembic` command."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import asyncpg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic_lockstep import lock
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine

from service.models import Base
from tests.support.configs import eventually, scenario_config
from tests.support.postgres import connect, service_url
from tests.support.processes import PROJECT_ROOT, run_python, service_environment
from tests.support.revisions import HEAD, REVISIONS

# Every test here starts a real process or server.
pytestmark = pytest.mark.processes

LOCK_KEY = lock.lock_key("platform-service:schema-migrations")


def service(*arguments: str, url: URL | None, **variables: str) -> subprocess.CompletedProcess[str]:
    return run_python("-m", "service", *arguments, url=url, timeout=120, environment=variables)


def alembic(*arguments: str, url: URL) -> subprocess.CompletedProcess[str]:
    return run_python("-m", "alembic", *arguments, url=url, timeout=120)


async def test_db_status_reports_pending_revisions_and_lock_holder(empty_database: URL) -> None:
    assert alembic("upgrade", "0001_accounts", url=empty_database).returncode == 0
    connection = await connect(empty_database)
    await connection.execute("SET application_name = 'status-test-holder'")
    await connection.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    holder_pid = await connection.fetchval("SELECT pg_backend_pid()")

    text_report = service("db", "status", url=empty_database)
    assert text_report.returncode == 0, text_report.stderr
    assert "current revision: 0001_accounts" in text_report.stdout
    assert f"pending:          {', '.join(REVISIONS[1:])}" in text_report.stdout
    assert f"lock holder:      pid {holder_pid} status-test-holder" in text_report.stdout

    report = json.loads(service("db", "status", "--json", url=empty_database).stdout)
    assert report["current_revision"] == ["0001_accounts"]
    assert report["heads"] == [HEAD]
    assert report["at_head"] is False
    assert report["pending"] == REVISIONS[1:]
    assert report["lock_holder"]["pid"] == holder_pid
    await connection.close()

    report = json.loads(service("db", "status", "--json", url=empty_database).stdout)
    assert report["lock_holder"] is None


def test_migrate_exits_zero_at_head_and_is_idempotent(empty_database: URL) -> None:
    first = service("migrate", url=empty_database)
    assert first.returncode == 0, first.stderr
    assert f"schema at head {HEAD}" in first.stdout
    assert first.stderr.count("applied revision") == len(REVISIONS)
    second = service("migrate", url=empty_database)
    assert second.returncode == 0, second.stderr
    assert "applied revision" not in second.stderr


def test_migrate_at_head_succeeds_at_once_whatever_its_timeout(migrated_database: URL) -> None:
    """The timeout bounds waiting and migrating, not the checks of a schema at head."""
    done = service("migrate", "--timeout", "3", url=migrated_database)
    assert done.returncode == 0, done.stderr
    assert f"schema at head {HEAD}" in done.stdout
    assert "gave up" not in done.stderr


def test_migrate_exits_non_zero_on_failure(empty_database: URL) -> None:
    failed = service("migrate", url=empty_database, ALEMBIC_CONFIG=str(scenario_config("failing")))
    assert failed.returncode == 1
    assert "no_such_table" in failed.stderr


async def test_migrate_gives_up_after_its_timeout_while_the_lock_is_held(
    empty_database: URL,
) -> None:
    connection = await connect(empty_database)
    await connection.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        waited = service("migrate", "--timeout", "2", url=empty_database)
    finally:
        await connection.close()
    assert waited.returncode == 1
    assert "gave up after 2.0s" in waited.stderr
    assert "stopped while waiting_for_lock" in waited.stderr


def test_invalid_settings_exit_2_naming_the_setting() -> None:
    refused = service("db", "status", url=None, DATABASE_URL="mysql://root:topsecret@db/app")
    assert refused.returncode == 2
    assert "DATABASE_URL: uses the scheme 'mysql'" in refused.stderr
    assert "topsecret" not in refused.stderr + refused.stdout


def test_invalid_arguments_are_refused() -> None:
    refused = service("--workers", "0", url=None)
    assert refused.returncode == 2
    assert "must be a whole number, 1 or more" in refused.stderr


def test_more_workers_than_the_memory_holds_are_refused_before_anything_starts() -> None:
    """Spawned at once, they would end in the kernel's out-of-memory killer,
    which kills other processes of the machine too."""
    refused = service("--workers", "100000", url=None)
    assert refused.returncode == 2, refused.stderr
    assert "'100000': 100000 workers need at least 7,812.5 GiB of memory" in refused.stderr
    assert "fit" in refused.stderr
    assert "embedded PostgreSQL" not in refused.stderr  # no database started
    assert "API:" not in refused.stderr  # nor a server
    variable = service("db", "status", url=None, WEB_CONCURRENCY="100000")
    assert variable.returncode == 2, variable.stderr
    assert "WEB_CONCURRENCY: '100000': 100000 workers need at least" in variable.stderr


def test_invalid_port_and_worker_variables_are_refused_by_name() -> None:
    port = service("db", "status", url=None, PORT="http")
    assert port.returncode == 2
    assert "PORT: 'http' is not a port number" in port.stderr
    workers = service("db", "status", url=None, WEB_CONCURRENCY="0")
    assert workers.returncode == 2
    assert "WEB_CONCURRENCY: '0': must be a whole number, 1 or more" in workers.stderr


def test_alembic_round_trip_and_no_drift(empty_database: URL) -> None:
    heads = alembic("heads", url=empty_database)
    assert heads.stdout.split() == [HEAD, "(head)"]
    for step in (["upgrade", "head"], ["downgrade", "base"], ["upgrade", "head"], ["check"]):
        result = alembic(*step, url=empty_database)
        assert result.returncode == 0, (step, result.stderr)
    assert "No new upgrade operations detected" in result.stdout


async def test_drift_between_models_and_migrations_is_detected(migrated_database: URL) -> None:
    """The comparison `alembic check` relies on does see a model change."""
    changed = sa.MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(changed)
    sa.Table("users", changed, sa.Column("nickname", sa.Text), extend_existing=True)
    engine = create_async_engine(service_url(migrated_database))
    async with engine.connect() as connection:
        clean = await connection.run_sync(
            lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata)
        )
        drift = await connection.run_sync(
            lambda c: compare_metadata(MigrationContext.configure(c), changed)
        )
    await engine.dispose()
    assert clean == []
    added = [change[3].name for change in drift if change[0] == "add_column"]
    assert added == ["nickname"]


async def test_alembic_command_line_waits_for_the_lock(empty_database: URL) -> None:
    connection = await connect(empty_database)
    await connection.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    upgrade = subprocess.Popen(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=PROJECT_ROOT,
        env=service_environment(DATABASE_URL=service_url(empty_database)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        await eventually(lambda: _migrator_connected(connection), within=60)
        await asyncio.sleep(1)
        assert upgrade.poll() is None, "alembic upgrade ended while the lock was held"
        assert await connection.fetchval("SELECT to_regclass('alembic_version')") is None
    finally:
        await connection.close()
    output, _ = upgrade.communicate(timeout=60)
    assert upgrade.returncode == 0, output
    assert "waiting for the migration lock" in output
    for revision in REVISIONS:
        assert f"-> {revision}" in output


async def test_alembic_command_line_retries_a_revision_blocked_by_a_table_lock(
    migrated_database: URL,
) -> None:
    """A hand-run upgrade meets a lock (here a reader's; after a large backfill,
    autovacuum's, which yields only after deadlock_timeout): its revision is
    rolled back and retried with a longer lock_timeout, as the bootstrap does,
    and goes through once the lock is gone."""
    blocker = await connect(migrated_database)
    transaction = blocker.transaction()
    await transaction.start()
    await blocker.execute("LOCK TABLE configs IN ACCESS SHARE MODE")
    upgrade = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "alembic", "upgrade", "head",
        cwd=PROJECT_ROOT,
        env=service_environment(
            DATABASE_URL=service_url(migrated_database),
            ALEMBIC_CONFIG=str(scenario_config("locking")),
        ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert upgrade.stdout is not None
    output: list[str] = []
    try:
        async with asyncio.timeout(120):
            while not any("could not get its locks" in line for line in output):
                line = (await upgrade.stdout.readline()).decode()
                assert line, "alembic upgrade ended before a retry:\n" + "".join(output)
                output.append(line)
    except TimeoutError:
        upgrade.kill()
        raise AssertionError("no retry within 120 s:\n" + "".join(output)) from None
    finally:
        await transaction.rollback()
        await blocker.close()
    rest, _ = await asyncio.wait_for(upgrade.communicate(), 120)
    text = "".join(output) + rest.decode()
    assert upgrade.returncode == 0, text
    assert "retry 1 of 20" in text
    connection = await connect(migrated_database)
    try:
        assert await connection.fetchval("SELECT version_num FROM alembic_version") == (
            "test_locking"
        )
    finally:
        await connection.close()


async def _migrator_connected(connection: asyncpg.Connection) -> bool:
    return bool(
        await connection.fetchval(
            # This database's only: a cluster shared with other tests has their migrators.
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name LIKE 'platform-service migrator%'"
        )
    )


def test_command_arguments_out_of_range_are_refused(migrated_database: URL) -> None:
    """Nonsense durations and counts are refused before any work (exit 2)."""
    refusals = {
        ("migrate", "--timeout", "nan"): "--timeout: 'nan': must be a number of seconds above 0",
        ("migrate", "--timeout", "-1"): "--timeout: '-1': must be a number of seconds above 0",
        ("db", "history", "--limit", "9" * 20): "--limit: '" + "9" * 20 + "': must be a whole",
        ("db", "history", "--limit", "\u0661"): "--limit: '\u0661': must be a whole number",
    }
    for arguments, said in refusals.items():
        refused = service(*arguments, url=migrated_database)
        assert refused.returncode == 2, (arguments, refused.stderr)
        assert said in refused.stderr, (arguments, refused.stderr)
