"""A process whose pools could exceed what the server accepts says so at startup
(the default sizes fit: tests/db/test_roles.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from service.db.connection_budget import EVENT_CONNECTIONS, MIGRATION_CONNECTIONS
from tests.support.postgres import connect, service_url
from tests.support.processes import ServiceProcess, service_environment, wait_for

# Every test here starts a real process or server.
pytestmark = pytest.mark.processes

WORKERS = 2
POOL_SIZE = 200


async def test_pools_larger_than_the_server_allows_are_warned_about(
    migrated_database: URL, tmp_path: Path
) -> None:
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
    process = ServiceProcess.service(environment, tmp_path / "big.log", "--workers", str(WORKERS))
    try:
        wait_for(lambda: len(process.pids_that_logged("schema at head")) == WORKERS, 60, "ready")
    finally:
        process.stop()
    warned = process.pids_that_logged(f"this process may open {needed} connections")
    assert len(warned) == WORKERS, process.logs()
    assert f"the server accepts {allowed}" in process.logs()
