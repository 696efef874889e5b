"""Requests still running when a graceful shutdown ends (GRACEFUL_SHUTDOWN_TIMEOUT)
are cancelled by uvicorn, which answered them with its own plain-text 500.
They are answered in the API's envelope instead: 503 with Retry-After, their
writes rolled back."""

from __future__ import annotations

import asyncio
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy.engine import URL

from tests.support.api import JSONAPI, create_account_over_http, document
from tests.support.postgres import connect
from tests.support.processes import wait_for
from tests.support.servers import ready_server

pytestmark = pytest.mark.processes

WRITES = 4


async def test_writes_cut_by_the_end_of_a_graceful_shutdown_get_the_api_s_503(
    migrated_database: URL,
) -> None:
    with ready_server(migrated_database, shipped=True, GRACEFUL_SHUTDOWN_TIMEOUT="2") as server:
        key = create_account_over_http(server.port or 0, "Stopping")
        headers = {"Authorization": f"Bearer {key}", "Content-Type": JSONAPI}
        url = f"http://127.0.0.1:{server.port}/v1/configs"
        admin = await connect(migrated_database)
        try:
            # The writes wait for this lock until the server is stopped.
            holder = admin.transaction()
            await holder.start()
            await admin.execute("LOCK TABLE configs IN EXCLUSIVE MODE")

            def write(n: int) -> httpx.Response:
                body = document("configs", {"key": f"cut-{n}", "name": f"Cut {n}"})
                return httpx.post(url, headers=headers, json=body, timeout=60)

            with ThreadPoolExecutor(WRITES) as pool:
                answers = [pool.submit(write, n) for n in range(WRITES)]
                waiting = (
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO configs%'"
                )

                async def blocked() -> bool:
                    # Not on `admin`: in its transaction, the view would stay
                    # as it was first read.
                    watcher = await connect(migrated_database)
                    try:
                        return bool(await watcher.fetchval(waiting) >= 1)
                    finally:
                        await watcher.close()

                deadline = time.monotonic() + 30
                while not await blocked():
                    assert time.monotonic() < deadline, "no write reached the lock"
                    await asyncio.sleep(0.05)
                server.signal(signal.SIGTERM)
                try:
                    cut = [answer.result(timeout=60) for answer in answers]
                except Exception:
                    print(server.logs()[-6000:])
                    raise
            await holder.rollback()
            for answer in cut:
                assert answer.status_code == 503, answer.text
                assert answer.headers["content-type"].startswith(JSONAPI), answer.headers
                assert "stopped" in answer.json()["errors"][0]["detail"]
                assert answer.headers["retry-after"]
            assert await admin.fetchval("SELECT count(*) FROM configs WHERE key LIKE 'cut-%'") == 0
            wait_for(lambda: server.process.poll() is not None, 30, "the server's exit")
            assert "Exception in ASGI application" not in server.logs()
        finally:
            await admin.close()
