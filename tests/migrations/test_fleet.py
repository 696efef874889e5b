"""A fleet of real uvicorn processes, several workers each, on one empty database."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tests.support.fleet import (
    DDL_AUDIT,
    assert_migrated_once,
    start_fleet_at_the_lock,
    wait_until_ready,
)
from tests.support.postgres import connect, service_url
from tests.support.processes import service_environment

# Every test here starts a real process or server.
pytestmark = pytest.mark.processes

PROCESSES = 4
WORKERS = 2


async def test_fleet_migrates_exactly_once(empty_database: URL, tmp_path: Path) -> None:
    connection = await connect(empty_database)
    await connection.execute(DDL_AUDIT)
    environment = service_environment(DATABASE_URL=service_url(empty_database))
    fleet = await start_fleet_at_the_lock(empty_database, environment, tmp_path, PROCESSES, WORKERS)
    try:
        wait_until_ready(fleet, PROCESSES * WORKERS)
    finally:
        for process in fleet:
            process.stop()
    await assert_migrated_once(connection, fleet)
    await connection.close()
