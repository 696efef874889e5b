"""Routine events are logged quietly and truthfully: a rolling restart that
stops a batched backfill is a stop, rolled back, not an error that pages;
a failing revision is one line with its cause and one traceback per worker."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tests.support.configs import scenario_config
from tests.support.postgres import connect, fetch_value, service_url
from tests.support.processes import ServiceProcess, run_python, service_environment, wait_for
from tests.support.seeds import BEFORE_IDENTITY, seed_users_sql

pytestmark = pytest.mark.processes

WORKERS = 2
BACKFILL = "0006_auth_identity_backfill"
USERS = 60_000


def _migrating(process: ServiceProcess, revision: str) -> bool:
    answer = process.readiness()
    return bool(
        answer
        and answer[1]["phase"] == "migrating"
        and answer[1]["migration"]["revision"] == revision
    )


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
        wait_for(lambda: _migrating(process, BACKFILL), 120, "the backfill to run", 0.02)
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
