"""Routine events are logged quietly and truthfully: a rolling restart that
stops a batched backfill is a stop, rolled back, not an error that pages;
a failing revision is one line with its cause and one traceback per worker."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import URL

from tests.support.configs import scenario_config
from tests.support.postgres import connect, fetch_value, service_url
from tests.support.processes import ServiceProcess, run_python, service_environment
from tests.support.seeds import BEFORE_IDENTITY, seed_users_sql

pytestmark = pytest.mark.processes

WORKERS = 2
USERS = 60_000


async def _wait_until_backfilling(url: URL, within: float = 120) -> None:
    """Until the backfill has committed some of its batches and not all: it is
    under way. Read from the database, not from /readyz: either worker may
    answer a probe, and the one migrating is the one whose event loop is
    busiest (under load the other took nearly every probe), and between
    attempts of a revision that met lock_timeout its phase is not `migrating`."""
    connection = await connect(url)
    try:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                done = await connection.fetchval(
                    "SELECT count(*) FROM users WHERE auth_provider IS NOT NULL"
                )
            except asyncpg.UndefinedColumnError:  # 0005, which adds it, has not run yet
                done = 0
            if 0 < done < USERS:
                return
            assert done < USERS, "the backfill ended before the test could stop it"
            await asyncio.sleep(0.02)
    finally:
        await connection.close()
    raise AssertionError(f"the backfill did not start within {within} s")


async def test_sigterm_during_a_batched_backfill_is_logged_as_a_stop(
    empty_database: URL, tmp_path: Path
) -> None:
    result = run_python("-m", "alembic", "upgrade", BEFORE_IDENTITY, url=empty_database)
    assert result.returncode == 0, result.stderr[-3000:]
    connection = await connect(empty_database)
    await connection.execute(seed_users_sql(USERS))
    await connection.close()
    environment = service_environment(
        DATABASE_URL=service_url(empty_database), BACKFILL_BATCH_SIZE="50", LOG_FORMAT="json"
    )
    process = ServiceProcess.service(
        environment, tmp_path / "rolling.log", "--workers", str(WORKERS)
    )
    try:
        try:
            await _wait_until_backfilling(empty_database)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{process.logs()}") from None
        process.signal(signal.SIGTERM)
        assert process.wait(60) == 0, process.logs()
    finally:
        process.stop()
    events = process.events()
    loud = [event for event in events if event["level"] in {"error", "critical"}]
    assert loud == [], process.logs()
    assert any(str(event["message"]).startswith("migration stopped at") for event in events), (
        process.logs()
    )
    # Rolled back: the backfill's revision is not stamped.
    version = await fetch_value(empty_database, "SELECT version_num FROM alembic_version")
    assert version == "0005_auth_identity_expand"


async def test_a_failing_revision_is_one_line_and_one_traceback_per_worker(
    migrated_database: URL, tmp_path: Path
) -> None:
    environment = service_environment(
        DATABASE_URL=service_url(migrated_database),
        ALEMBIC_CONFIG=str(scenario_config("failing")),
        LOG_FORMAT="json",
    )
    process = ServiceProcess.service(
        environment, tmp_path / "failing.log", "--workers", str(WORKERS)
    )
    assert process.exit_status(90) == 4, process.logs()
    events = process.events()
    failed = process.pids_that_logged("migration failed")
    assert failed, process.logs()
    for pid in failed:
        traces = [
            str(event["exception"])
            for event in events
            if event["pid"] == pid and "exception" in event
        ]
        assert len(traces) == 1, traces
        # One traceback, not the driver's, its adaptation's and SQLAlchemy's.
        assert traces[0].count("Traceback (most recent call last)") == 1, traces[0]
        assert "failing_revision.py" in traces[0], traces[0]
        assert traces[0].endswith(
            'UndefinedTableError: relation "no_such_table" does not exist (SQLSTATE 42P01)'
        ), traces[0]
