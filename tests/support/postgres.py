"""The PostgreSQL server the tests use, and databases on it.

TEST_DATABASE_URL names a running server (any database on it; the role must be
a superuser, to create databases and event triggers). Without it the tests
start the embedded PostgreSQL in a temporary folder.
"""

from __future__ import annotations

import asyncio
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

# A test server loses nothing worth keeping in a crash, so it skips the work
# that makes a crash safe: about a third of a test database's creation is
# flushing the cloned files and the WAL. Never the service's own embedded
# server (service/db/embedded.py keeps fsync on); a server named by
# TEST_DATABASE_URL is the operator's to tune (.ci/run does it for CI's).
NO_DURABILITY = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


@contextmanager
def test_server(folder: Path) -> Iterator[URL]:
    """An admin URL of the server under test."""
    from tests.support.process_guard import processes_allowed

    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        yield parse_database_url(configured).set(database="postgres")
        return
    # The session's database server is the one process every tier may start.
    with processes_allowed():
        server = EmbeddedPostgres(folder)
        server.start()
    try:
        url = server.url("postgres")
        asyncio.run(_without_durability(url))
        yield url
    finally:
        with processes_allowed():
            server.stop()


async def _without_durability(admin: URL) -> None:
    connection = await connect(admin)
    try:
        for name, value in NO_DURABILITY.items():
            await connection.execute(f"ALTER SYSTEM SET {name} = {value}")
        await connection.execute("SELECT pg_reload_conf()")
    finally:
        await connection.close()


def plain(url: URL) -> str:
    """The URL as asyncpg and environment variables take it (password included)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def service_url(url: URL) -> str:
    return url.render_as_string(hide_password=False)


async def connect(url: URL) -> asyncpg.Connection:
    return await asyncpg.connect(plain(url))


async def take_tree_lock(connection: asyncpg.Connection, account_id: object) -> None:
    """Take an account's tree lock (service/configs/store.py) in `connection`'s
    transaction: a create that locks the tree (the SDK's) waits for it."""
    await connection.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"configs-tree:{account_id}"
    )


async def create_database(admin: URL, template: str | None = None) -> URL:
    """A new database, empty or a clone of `template`.

    A clone is copied file by file (STRATEGY FILE_COPY, PostgreSQL 15+) rather
    than written through the WAL block by block (15's default): with durability
    off, the copy's two checkpoints cost next to nothing, and it was the faster
    of the two here (docs/benchmarks/tests.notes.md)."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    connection = await connect(admin)
    try:
        clause = ""
        if template:
            clause = f" TEMPLATE {template}"
            if connection.get_server_version().major >= 15:
                clause += " STRATEGY FILE_COPY"
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
