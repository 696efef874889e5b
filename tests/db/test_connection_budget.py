"""A process whose pools could exceed what the server accepts says so at startup
(the default sizes fit: tests/db/test_roles.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic_lockstep.lock import lock_key
from sqlalchemy.engine import URL

from service.db.connection_budget import EVENT_CONNECTIONS, MIGRATION_CONNECTIONS
from service.db.embedded import EmbeddedPostgres
from tests.support.configs import shared_folder
from tests.support.fleet import start_fleet, wait_until_ready
from tests.support.postgres import connect, service_url
from tests.support.processes import ServiceProcess, free_port, service_environment, wait_for
from tests.support.readiness import LOCK_NAME
from tests.support.revisions import REVISIONS
from tests.support.roles import owner_and_app_roles

# Every test here starts a real process or server.
pytestmark = pytest.mark.processes

WORKERS = 2
POOL_SIZE = 200


def _start(entry_point: str, environment: dict[str, str], log: Path) -> ServiceProcess:
    if entry_point == "uvicorn":
        return ServiceProcess.uvicorn(environment, log, workers=WORKERS)
    if entry_point == "gunicorn":
        return ServiceProcess.gunicorn(environment, log, workers=WORKERS)
    return ServiceProcess.service(environment, log, "--workers", str(WORKERS))


@pytest.mark.processes
@pytest.mark.parametrize("entry_point", ["python -m service", "uvicorn", "gunicorn"])
async def test_pools_larger_than_the_server_allows_are_warned_about(
    migrated_database: URL, tmp_path: Path, entry_point: str
) -> None:
    """Each entry point's workers are counted: `--workers 2`, `-w 2`."""
    connection = await connect(migrated_database)
    try:
        allowed = await connection.fetchval(
            "SELECT current_setting('max_connections')::int"
            " - current_setting('superuser_reserved_connections')::int"
            " - coalesce(current_setting('reserved_connections', true)::int, 0)"
        )
    finally:
        await connection.close()
    needed = WORKERS * (POOL_SIZE + MIGRATION_CONNECTIONS + EVENT_CONNECTIONS)
    assert needed > allowed
    environment = service_environment(
        DATABASE_URL=service_url(migrated_database),
        DATABASE_POOL_SIZE=str(POOL_SIZE),
        LOG_FORMAT="json",
    )
    process = _start(entry_point, environment, tmp_path / "big.log")
    try:
        wait_for(lambda: len(process.pids_that_logged("schema at head")) == WORKERS, 60, "ready")
    finally:
        process.stop()
    warned = process.pids_that_logged(
        f"this process may open {needed} connections ({WORKERS} workers x"
    )
    assert len(warned) == WORKERS, process.logs()
    assert f"the server accepts {allowed}" in process.logs()


# A server allowing 13 connections, 3 of them kept for superusers (PostgreSQL's
# default): 10 for the service's role, far fewer than its pools could take (52),
# but what four serving workers need, each with its listening connection and
# one pooled (with 6, the workers that reached head first kept theirs and the
# last could not finish its check: a CI run waited for it in vain).
SMALL_SERVER = {"max_connections": "13", "superuser_reserved_connections": "3"}
REPLICAS = 2


@pytest.mark.processes
@pytest.mark.one_server  # its own small server, whatever the server under test
async def test_an_over_budget_fleet_counts_its_workers_and_still_migrates(tmp_path: Path) -> None:
    """Two `uvicorn --workers 2` replicas on a server with 10 slots for their role
    (their pools could take 26 each): each worker names its 2 workers in one
    warning; while the schema is behind head and another migrator holds the
    lock, a worker keeps no connection but its migration session (no idle pooled
    one, no listening one), so all four wait for the lock; then the fleet
    migrates once and every replica is ready."""
    with (
        shared_folder() as folder,
        EmbeddedPostgres(
            folder / "small", port=free_port(), server_settings=SMALL_SERVER
        ) as server,
    ):
        admin = server.url("postgres")
        async with owner_and_app_roles(admin) as roles:
            database = await roles.database(grants=None)
            owner = roles.url(roles.owner, database)
            holder = await connect(admin.set(database=database))
            try:
                await holder.execute("SELECT pg_advisory_lock($1)", lock_key(LOCK_NAME))
                environment = service_environment(
                    DATABASE_URL=service_url(owner), LOG_FORMAT="json"
                )
                fleet = start_fleet(environment, tmp_path, REPLICAS, workers=WORKERS)
                try:
                    try:
                        wait_for(
                            lambda: _lock_waiters(fleet) == REPLICAS * WORKERS,
                            120,
                            "every worker waiting for the migration lock",
                        )
                    except AssertionError as timeout:
                        logs = "\n".join(process.logs()[-4000:] for process in fleet)
                        raise AssertionError(f"{timeout}:\n{logs}") from None
                    sessions = await holder.fetch(
                        "SELECT application_name FROM pg_stat_activity"
                        " WHERE usename = $1 ORDER BY 1",
                        roles.owner,
                    )
                    assert len(sessions) == REPLICAS * WORKERS, sessions
                    assert all(" migrator " in row["application_name"] for row in sessions)
                    await holder.execute("SELECT pg_advisory_unlock($1)", lock_key(LOCK_NAME))
                    await holder.close()  # its slot is the fleet's now
                    wait_until_ready(fleet, REPLICAS * WORKERS)
                    applied = [
                        event
                        for process in fleet
                        for event in process.events()
                        if event["message"].startswith("applied revision")
                    ]
                    assert len(applied) == len(REVISIONS)
                finally:
                    for process in fleet:
                        process.stop()
            finally:
                await holder.close()
    needed = WORKERS * (10 + MIGRATION_CONNECTIONS + EVENT_CONNECTIONS)
    for process in fleet:
        warnings = process.pids_that_logged(
            f"this process may open {needed} connections ({WORKERS} workers x"
        )
        assert len(warnings) == WORKERS, process.logs()
        assert "the server accepts 10 (max_connections 13 - 3 reserved)" in process.logs()


def _lock_waiters(fleet: list[ServiceProcess]) -> int:
    for process in fleet:
        process.assert_running()
    return sum(len(process.pids_that_logged("waiting for the migration lock")) for process in fleet)
