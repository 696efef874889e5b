"""Statements run straight on the driver (service/db/driver.py) keep what
SQLAlchemy's own execution gives: the request's transaction (its BEGIN, its
statement timeout, its rollback), errors wrapped as DBAPIError with their
SQLSTATE and without parameters, a lost connection invalidated and replaced."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from alembic_lockstep.errors import sqlstate
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
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


async def test_an_error_is_wrapped_as_sqlalchemy_wraps_its_own(engine: AsyncEngine) -> None:
    with pytest.raises(DBAPIError) as raised:
        async with engine.begin() as connection:
            await DIVIDE.fetchval(connection, 0)
    assert sqlstate(raised.value) == "22012"
    assert not raised.value.connection_invalidated
    # The engine's hide_parameters holds for it as for SQLAlchemy's statements.
    assert "parameters hidden" in str(raised.value)


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
