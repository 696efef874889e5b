"""Statements run straight on the driver (service/db/driver.py) keep what
SQLAlchemy's own execution gives: the request's transaction (its BEGIN, its
statement timeout, its rollback), errors wrapped as DBAPIError with their
SQLSTATE and without parameters (IntegrityError for a violated constraint), a
lost connection invalidated and replaced. Each holds both for a statement that
opens the transaction (run through SQLAlchemy, which sends the BEGIN) and for
one inside it (run on the driver connection directly)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from alembic_lockstep.errors import sqlstate
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.driver import DriverStatement
from service.db.engines import create_app_engine
from tests.support.configs import settings_for
from tests.support.postgres import connect

TRANSACTION = DriverStatement("SELECT pg_current_xact_id()::text")
TIMEOUT = DriverStatement("SELECT current_setting('statement_timeout')")
INSERT = DriverStatement("INSERT INTO accounts (name) VALUES ($1)")
DIVIDE = DriverStatement("SELECT 1 / $1::int")
BACKEND = DriverStatement("SELECT pg_backend_pid()")
INSERT_WITH_ID = DriverStatement("INSERT INTO accounts (id, name) VALUES ($1, 'Twice')")
# Where the statement under test runs: first of its transaction, or after one.
POSITIONS = ["opens the transaction", "inside the transaction"]


async def _run_at(
    engine: AsyncEngine, position: str, statement: DriverStatement, *arguments: object
) -> None:
    """`statement` in a transaction of its own, at `position` in it."""
    async with engine.begin() as connection:
        if position == "inside the transaction":
            await TRANSACTION.fetchval(connection)
        await statement.fetchval(connection, *arguments)


@pytest.fixture
async def engine(migrated_database: URL) -> AsyncIterator[AsyncEngine]:
    engine = create_app_engine(
        settings_for(migrated_database, request_statement_timeout=2.5, database_pool_size=1)
    )
    yield engine
    await engine.dispose()


async def test_driver_statements_run_in_the_transaction_sqlalchemy_began(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as connection:
        # First of the transaction: the driver sends the adapter's BEGIN, with
        # the request statement timeout in it.
        first = await TRANSACTION.fetchval(connection)
        assert await TIMEOUT.fetchval(connection) == "2500ms"
        assert await connection.scalar(text("SELECT pg_current_xact_id()::text")) == first
        assert await TRANSACTION.fetchval(connection) == first


async def test_a_driver_statement_is_rolled_back_with_its_transaction(
    engine: AsyncEngine, migrated_database: URL
) -> None:
    async def failing_request() -> None:
        async with engine.begin() as connection:
            await INSERT.execute(connection, "Rolled back")
            raise RuntimeError("the handler failed")

    with pytest.raises(RuntimeError):
        await failing_request()
    async with engine.begin() as connection:
        await INSERT.execute(connection, "Committed")
    database = await connect(migrated_database)
    try:
        names = [row["name"] for row in await database.fetch("SELECT name FROM accounts")]
    finally:
        await database.close()
    assert names == ["Committed"]


@pytest.mark.parametrize("position", POSITIONS)
async def test_an_error_is_wrapped_as_sqlalchemy_wraps_its_own(
    engine: AsyncEngine, position: str
) -> None:
    with pytest.raises(DBAPIError) as raised:
        await _run_at(engine, position, DIVIDE, 0)
    assert sqlstate(raised.value) == "22012"
    assert not raised.value.connection_invalidated
    # The engine's hide_parameters holds for it as for SQLAlchemy's statements.
    assert "parameters hidden" in str(raised.value)


@pytest.mark.parametrize("position", POSITIONS)
async def test_a_violated_constraint_is_an_integrity_error(
    engine: AsyncEngine, position: str
) -> None:
    account = uuid.uuid4()
    async with engine.begin() as connection:
        await INSERT_WITH_ID.execute(connection, account)
    with pytest.raises(IntegrityError) as raised:
        await _run_at(engine, position, INSERT_WITH_ID, account)
    assert sqlstate(raised.value) == "23505"
    assert "parameters hidden" in str(raised.value)


async def test_a_connection_lost_inside_the_transaction_is_invalidated(
    engine: AsyncEngine, migrated_database: URL
) -> None:
    pids = []

    async def lose_the_connection_midway() -> None:
        async with engine.begin() as connection:
            pids.append(await BACKEND.fetchval(connection))
            killer = await connect(migrated_database)
            try:
                assert await killer.fetchval("SELECT pg_terminate_backend($1)", pids[0])
            finally:
                await killer.close()
            await BACKEND.fetchval(connection)

    with pytest.raises(DBAPIError) as raised:
        await lose_the_connection_midway()
    assert raised.value.connection_invalidated
    lost = pids[0]
    async with engine.begin() as connection:
        assert await BACKEND.fetchval(connection) != lost


async def test_a_lost_connection_is_invalidated_and_replaced(
    engine: AsyncEngine, migrated_database: URL
) -> None:
    async with engine.begin() as connection:
        lost = await BACKEND.fetchval(connection)
    killer = await connect(migrated_database)
    try:
        assert await killer.fetchval("SELECT pg_terminate_backend($1)", lost)
    finally:
        await killer.close()
    with pytest.raises(DBAPIError) as raised:
        async with engine.begin() as connection:
            await BACKEND.fetchval(connection)
    assert raised.value.connection_invalidated
    # The pool's one connection was replaced: the next transaction works.
    async with engine.begin() as connection:
        assert await BACKEND.fetchval(connection) != lost
