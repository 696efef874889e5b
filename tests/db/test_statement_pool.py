"""The driver's own pool for the statements that commit on their own
(service/db/statement_pool.py): the engine's session (its statement timeout,
outside any transaction), errors as SQLAlchemy names them, values decoded as
SQLAlchemy's connections decode them, nothing opened until asked, a worker's
connections shared with SQLAlchemy's pool, connections refused or lost
answered as SQLAlchemy's pool's are, and closed ones replaced."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from alembic_lockstep.errors import sqlstate
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, IntegrityError

from service.db.driver import DriverStatement
from service.db.engines import create_app_engine
from service.db.errors import is_transient
from service.db.statement_pool import StatementPool, open_statement_pool
from tests.support.configs import settings_for
from tests.support.postgres import connect

SESSION = DriverStatement(
    "SELECT current_setting('statement_timeout') AS timeout,"
    " pg_current_xact_id_if_assigned() IS NULL AS outside, pg_backend_pid() AS pid"
)
BACKEND = DriverStatement("SELECT pg_backend_pid()")
INSERT_WITH_ID = DriverStatement("INSERT INTO accounts (id, name) VALUES ($1, 'Twice')")
WIDE = {"big": 2**70 + 1, "list": [-(2**80), 1.5, "é", None], "inf": 1}
VALUES = "SELECT $1::text::jsonb AS b, $1::text::json AS j"


@pytest.fixture
async def pool(migrated_database: URL) -> AsyncIterator[StatementPool]:
    # Three connections for statements, three for transactions.
    settings = settings_for(migrated_database, request_statement_timeout=2.5, database_pool_size=6)
    engine = create_app_engine(settings)
    opened = await open_statement_pool(settings, engine)
    assert opened is not None
    yield opened
    await opened.close()
    await engine.dispose()


async def _sessions(url: URL) -> int:
    observer = await connect(url)
    try:
        return int(
            await observer.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1"
                " AND pid <> pg_backend_pid()",
                url.database,
            )
        )
    finally:
        await observer.close()


def test_the_pool_size_is_shared_between_the_two_pools(migrated_database: URL) -> None:
    sizes = {
        (10, 0.5, False): (5, 5),
        (10, 0.9, False): (9, 1),
        (10, 0.0, False): (0, 10),
        (2, 0.5, False): (1, 1),
        (1, 0.5, False): (0, 1),  # one connection cannot be shared
        (10, 0.5, True): (0, 10),  # the driver's pool cannot ping
    }
    for (size, share, ping), expected in sizes.items():
        settings = settings_for(
            migrated_database,
            database_pool_size=size,
            database_statement_pool_share=share,
            database_pool_pre_ping=ping,
        )
        found = (settings.statement_pool_size, settings.transaction_pool_size)
        assert found == expected, (size, share, ping)


async def test_nothing_is_opened_before_a_statement_asks(
    pool: StatementPool, migrated_database: URL
) -> None:
    assert await _sessions(migrated_database) == 0
    lent = await pool.acquire()
    await pool.release(lent)
    assert await _sessions(migrated_database) == 1


async def test_a_statement_runs_outside_a_transaction_bounded_by_the_session(
    pool: StatementPool,
) -> None:
    lent = await pool.acquire()
    try:
        row = await SESSION.fetchrow(lent)
        assert row is not None
        assert row["timeout"] == "2500ms"
        assert row["outside"]
    finally:
        await pool.release(lent)


async def test_errors_are_named_as_sqlalchemy_names_them(pool: StatementPool) -> None:
    account = uuid.uuid4()
    lent = await pool.acquire()
    try:
        await INSERT_WITH_ID.execute(lent, account)
        with pytest.raises(IntegrityError) as raised:
            await INSERT_WITH_ID.execute(lent, account)
    finally:
        await pool.release(lent)
    assert sqlstate(raised.value) == "23505"
    assert "parameters hidden" in str(raised.value)


async def test_json_values_read_as_from_sqlalchemys_connections(
    pool: StatementPool, migrated_database: URL
) -> None:
    import json

    document = json.dumps(WIDE)
    lent = await pool.acquire()
    try:
        row = await DriverStatement(VALUES).fetchrow(lent, document)
    finally:
        await pool.release(lent)
    assert row is not None
    engine = create_app_engine(settings_for(migrated_database))
    try:
        async with engine.connect() as connection:
            theirs = (await connection.execute(text(VALUES), [{"1": document}])).one()
    except DBAPIError:
        async with engine.connect() as connection:
            raw = await connection.exec_driver_sql(VALUES, (document,))
            theirs = raw.one()
    finally:
        await engine.dispose()
    assert row["b"] == theirs[0] == WIDE
    assert row["j"] == theirs[1] == WIDE
    assert type(row["b"]["big"]) is int


async def test_a_connection_given_back_in_a_transaction_is_rolled_back(
    migrated_database: URL,
) -> None:
    settings = settings_for(migrated_database, database_pool_size=2)
    engine = create_app_engine(settings)
    pool = await open_statement_pool(settings, engine)
    assert pool is not None
    try:
        lent = await pool.acquire()
        await lent.driver.execute("BEGIN")
        await INSERT_WITH_ID.execute(lent, uuid.uuid4())
        await pool.release(lent)
        again = await pool.acquire()
        try:
            assert not again.driver.is_in_transaction()
            assert await DriverStatement("SELECT count(*) FROM accounts").fetchval(again) == 0
        finally:
            await pool.release(again)
    finally:
        await pool.close()
        await engine.dispose()


async def test_a_connection_lost_mid_statement_is_a_lost_connection(
    pool: StatementPool, migrated_database: URL
) -> None:
    """asyncpg gives a connection the server closed back to its pool at
    once; the statement's error is still the lost connection's (answered 503),
    not an error of asking a connection given back whether it is closed."""
    lent = await pool.acquire()
    try:
        pid = await BACKEND.fetchval(lent)
        sleeping = asyncio.ensure_future(DriverStatement("SELECT pg_sleep(30)").execute(lent))
        killer = await connect(migrated_database)
        try:
            for _ in range(200):
                waiting = await killer.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'",
                    pid,
                )
                if waiting:
                    break
                await asyncio.sleep(0.01)
            assert await killer.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await killer.close()
        with pytest.raises(DBAPIError) as raised:
            await sleeping
    finally:
        await pool.release(lent)
    assert raised.value.connection_invalidated
    assert is_transient(raised.value)


async def test_connections_the_server_closed_while_idle_are_replaced(
    pool: StatementPool, migrated_database: URL
) -> None:
    """A restart, or an operator's pg_terminate_backend, between requests
    fails none: each closed connection is replaced when next lent."""
    lent = [await pool.acquire() for _ in range(3)]
    pids = [await BACKEND.fetchval(each) for each in lent]
    for each in lent:
        await pool.release(each)
    killer = await connect(migrated_database)
    try:
        for pid in pids:
            assert await killer.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await killer.close()
    await asyncio.sleep(0.2)  # the server's goodbye reaches each connection
    again = [await pool.acquire() for _ in range(3)]
    try:
        found = [await BACKEND.fetchval(each) for each in again]
    finally:
        for each in again:
            await pool.release(each)
    assert not set(found) & set(pids)


async def test_a_connection_refused_is_raised_as_sqlalchemys_pool_raises_it(
    migrated_database: URL,
) -> None:
    """A server that refuses connections (starting, stopping, full, a
    rotated secret, a missing database) is answered 503, not 500."""
    settings = settings_for(migrated_database.set(database="no_such_database_here"))
    engine = create_app_engine(settings)
    refusing = await open_statement_pool(settings, engine)
    assert refusing is not None
    try:
        with pytest.raises(DBAPIError) as raised:
            await refusing.acquire()
    finally:
        await refusing.close()
        await engine.dispose()
    assert sqlstate(raised.value) == "3D000"
    assert is_transient(raised.value)
