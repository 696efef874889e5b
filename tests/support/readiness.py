"""The real lifespan in-process, and its readiness answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from alembic_lockstep import lock
from asgi_lifespan import LifespanManager
from sqlalchemy.engine import URL

from service.app import create_app
from settings import Settings
from tests.support.api import STARTUP_WAIT
from tests.support.configs import eventually
from tests.support.postgres import connect
from tests.support.processes import OPERATOR

LOCK_NAME = "platform-service:schema-migrations"


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=STARTUP_WAIT, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            yield client


async def readiness(client: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    response = await client.get("/readyz", headers=OPERATOR)
    return response.status_code, response.json()


async def wait_for_phase(client: httpx.AsyncClient, phase: str) -> dict[str, Any]:
    async def in_phase() -> dict[str, Any] | None:
        _, body = await readiness(client)
        return body if body["phase"] == phase else None

    return await eventually(in_phase)  # type: ignore[no-any-return]


@asynccontextmanager
async def holding_lock(url: URL, name: str = LOCK_NAME) -> AsyncIterator[int]:
    """Hold the migration lock (of this lock name) from the test; yields the holder's backend pid."""
    connection = await connect(url)
    try:
        assert await connection.fetchval("SELECT pg_try_advisory_lock($1)", lock.lock_key(name))
        yield await connection.fetchval("SELECT pg_backend_pid()")
    finally:
        await connection.close()
