"""The PostgreSQL server the tests use, and databases on it.

TEST_DATABASE_URL names a running server (any database on it; the role must be
a superuser, to create databases and event triggers). Without it the tests
start the embedded PostgreSQL in a temporary folder.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import URL

from service.db.embedded import EmbeddedPostgres
from settings import parse_database_url


@contextmanager
def test_server(folder: Path) -> Iterator[URL]:
    """An admin URL of the server under test."""
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        yield parse_database_url(configured).set(database="postgres")
        return
    with EmbeddedPostgres(folder) as server:
        yield server.url("postgres")


def plain(url: URL) -> str:
    """The URL as asyncpg and environment variables take it (password included)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def service_url(url: URL) -> str:
    return url.render_as_string(hide_password=False)


async def connect(url: URL) -> asyncpg.Connection:
    return await asyncpg.connect(plain(url))


async def create_database(admin: URL, template: str | None = None) -> URL:
    name = f"test_{uuid.uuid4().hex[:12]}"
    connection = await connect(admin)
    try:
        clause = f" TEMPLATE {template}" if template else ""
        await connection.execute(f"CREATE DATABASE {name}{clause}")
    finally:
        await connection.close()
    return admin.set(database=name)


async def drop_database(admin: URL, name: str) -> None:
    connection = await connect(admin)
    try:
        await connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await connection.close()


async def fetch_value(url: URL, query: str, *arguments: object) -> Any:
    """One value of one query, on a connection of its own."""
    connection = await connect(url)
    try:
        return await connection.fetchval(query, *arguments)
    finally:
        await connection.close()


async def advisory_locks(url: URL) -> int:
    """Advisory locks held in the database of `url` now, by any session."""
    query = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    return int(await fetch_value(url, query))


# The backend running the slow scenario's pg_sleep (tests/scenarios/slow).
SLEEPING_MIGRATOR = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
    " AND pid <> pg_backend_pid() AND query LIKE 'SELECT pg_sleep%' AND state = 'active'"
)


async def count_attempts(url: URL) -> None:
    """Make the test scenarios' failing and slow revisions count their attempts
    (they call nextval on this sequence when it exists; nextval survives a rollback)."""
    await fetch_value(url, "CREATE SEQUENCE test_attempts")


async def attempts(url: URL) -> int:
    """How often the failing or slow revision started, since `count_attempts`."""
    query = "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM test_attempts"
    return int(await fetch_value(url, query))


@asynccontextmanager
async def reading_configs(url: URL) -> AsyncIterator[None]:
    """A long transaction holding ACCESS SHARE on configs, as a slow report would."""
    connection = await connect(url)
    transaction = connection.transaction()
    await transaction.start()
    await connection.execute("LOCK TABLE configs IN ACCESS SHARE MODE")
    try:
        yield
    finally:
        await transaction.rollback()
        await connection.close()
