"""Behind a real PgBouncer in transaction pooling mode: requests through the
pooler, the lock and the DDL on the direct connection."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import URL

from tests.support.api import JSONAPI, document
from tests.support.configs import shared_folder
from tests.support.fleet import (
    DDL_AUDIT,
    assert_migrated_once,
    start_fleet_at_the_lock,
    wait_until_ready,
)
from tests.support.pgbouncer import pgbouncer
from tests.support.postgres import connect, service_url
from tests.support.processes import OPERATOR_TOKEN, service_environment

# Every test here starts a real process or server.
pytestmark = pytest.mark.processes

PROCESSES = 3
WORKERS = 2


async def test_fleet_behind_pgbouncer(empty_database: URL, tmp_path: Path) -> None:
    connection = await connect(empty_database)
    await connection.execute(DDL_AUDIT)
    with shared_folder() as folder, pgbouncer(empty_database, folder / "pgbouncer") as pooled:
        environment = service_environment(
            DATABASE_URL=service_url(pooled),
            MIGRATION_DATABASE_URL=service_url(empty_database),
            DATABASE_POOLER="transaction",
            OPERATOR_TOKEN=OPERATOR_TOKEN,
        )
        fleet = await start_fleet_at_the_lock(
            empty_database, environment, tmp_path, PROCESSES, WORKERS
        )
        try:
            wait_until_ready(fleet, PROCESSES * WORKERS)
            async with httpx.AsyncClient(timeout=30) as client:
                statuses = await asyncio.gather(
                    *(
                        _work(client, f"http://127.0.0.1:{process.port}", n)
                        for n, process in enumerate(fleet)
                        for _ in range(4)
                    )
                )
            assert set(statuses) == {200}
        finally:
            for process in fleet:
                process.stop()
    await assert_migrated_once(connection, fleet)
    assert await connection.fetchval("SELECT count(*) FROM accounts") == PROCESSES * 4
    await connection.close()


async def _work(client: httpx.AsyncClient, base: str, replica: int) -> int:
    """Create an account, then read and write through its key, all via the pooler."""
    created = await client.post(
        f"{base}/v1/accounts",
        headers={"Authorization": f"Bearer {OPERATOR_TOKEN}", "Content-Type": JSONAPI},
        json=document(
            "accounts",
            {"name": f"replica {replica}", "owner": {"email": "o@example.test", "role": "OWNER"}},
        ),
    )
    assert created.status_code == 201, created.text
    key = next(item for item in created.json()["included"] if item["type"] == "api-keys")[
        "attributes"
    ]["secret"]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": JSONAPI}
    for number in range(5):
        made = await client.post(
            f"{base}/v1/configs",
            headers=headers,
            json=document("configs", {"key": f"c{number}", "name": "C"}),
        )
        assert made.status_code == 201, made.text
    listed = await client.get(f"{base}/v1/configs", headers=headers)
    assert len(listed.json()["data"]) == 5
    return listed.status_code
