"""Hot statements run straight on the driver connection of a request's transaction.

SQLAlchemy's execution of one statement (its compiled cache, the asyncpg
adapter's cursor and prepared-statement lookup, the greenlet hand-off, the
result's metadata) costs about 0.3 ms of CPU more than asyncpg's own on the
benchmark machine: per statement, about half of what the baseline spends on a
whole request (docs/benchmarks/api.notes.md). The few constant statements of
the hottest paths (the caller's key on every request, a config by id, its
chain, an environment check) are `DriverStatement`s. Only public doors are
used: `AsyncConnection.get_raw_connection()` and its `driver_connection`
(the asyncpg connection), asyncpg's own API, and SQLAlchemy's public
`DBAPIError.instance()` and `AsyncConnection.invalidate()`, so an upgrade of
either library cannot silently break them. What SQLAlchemy's execution gives,
they keep:

- the transaction: SQLAlchemy begins its transaction on the first statement
  it runs (the BEGIN carries the statement timeout, service/db/statement_timeout.py).
  While the driver connection is not in a transaction, a `DriverStatement`
  runs through `exec_driver_sql` (the same $n text, SQLAlchemy's paramstyle
  for asyncpg), so SQLAlchemy sends that BEGIN and will commit or roll back
  what follows; once it is in one, the statement runs on asyncpg directly,
  inside it;
- errors: wrapped as SQLAlchemy wraps its own: the DB-API class of the
  dialect's module (IntegrityError for a violated constraint, answered 409),
  `DBAPIError` with the SQLSTATE, parameters hidden as the engine hides them,
  and a lost connection invalidated (the pool replaces it);
- values: asyncpg decodes with the codecs SQLAlchemy set on the connection
  (json and jsonb as Python values); rows are read by column name (asyncpg's
  `Record` or SQLAlchemy's `RowMapping`, both mappings);
- prepared statements: asyncpg's statement cache of the connection, sized by
  the engine's settings (off behind a transaction-pooling PgBouncer).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

import asyncpg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

Row = Mapping[Any, Any]


class DriverStatement:
    """One constant SQL statement with $n parameters, run by asyncpg inside the
    transaction of a SQLAlchemy connection."""

    __slots__ = ("sql",)

    def __init__(self, sql: str) -> None:
        self.sql = sql

    async def fetch(self, connection: AsyncConnection, *arguments: Any) -> list[Row]:
        driver = await _driver(connection)
        if driver is None:
            result = await connection.exec_driver_sql(self.sql, arguments)
            return list(result.mappings().all())
        try:
            rows: list[Row] = await driver.fetch(self.sql, *arguments)
        except Exception as error:
            await _raise_as_sqlalchemy_would(connection, driver, self.sql, arguments, error)
        return rows

    async def fetchrow(self, connection: AsyncConnection, *arguments: Any) -> Row | None:
        driver = await _driver(connection)
        if driver is None:
            result = await connection.exec_driver_sql(self.sql, arguments)
            return result.mappings().first()
        try:
            row: Row | None = await driver.fetchrow(self.sql, *arguments)
        except Exception as error:
            await _raise_as_sqlalchemy_would(connection, driver, self.sql, arguments, error)
        return row

    async def fetchval(self, connection: AsyncConnection, *arguments: Any) -> Any:
        driver = await _driver(connection)
        if driver is None:
            result = await connection.exec_driver_sql(self.sql, arguments)
            return result.scalar()
        try:
            return await driver.fetchval(self.sql, *arguments)
        except Exception as error:
            await _raise_as_sqlalchemy_would(connection, driver, self.sql, arguments, error)

    async def execute(self, connection: AsyncConnection, *arguments: Any) -> None:
        driver = await _driver(connection)
        if driver is None:
            await connection.exec_driver_sql(self.sql, arguments)
            return
        try:
            await driver.execute(self.sql, *arguments)
        except Exception as error:
            await _raise_as_sqlalchemy_would(connection, driver, self.sql, arguments, error)


async def _driver(connection: AsyncConnection) -> asyncpg.Connection | None:
    """The asyncpg connection under `connection` when it is inside the
    transaction SQLAlchemy began; None before that (and in autocommit)."""
    raw = await connection.get_raw_connection()
    driver: asyncpg.Connection = raw.driver_connection
    return driver if driver.is_in_transaction() else None


# asyncpg's exception classes and the PEP 249 class each maps to, most
# specific first (the same mapping SQLAlchemy's asyncpg adapter applies).
_DBAPI_CLASSES: tuple[tuple[type[BaseException], str], ...] = (
    (asyncpg.exceptions.IntegrityConstraintViolationError, "IntegrityError"),
    (asyncpg.exceptions.InvalidCachedStatementError, "NotSupportedError"),
    (asyncpg.exceptions.SyntaxOrAccessError, "ProgrammingError"),
    (asyncpg.exceptions.InternalServerError, "InternalError"),
    (asyncpg.exceptions.InternalClientError, "InternalError"),
    (asyncpg.exceptions.InterfaceError, "InterfaceError"),
    (asyncpg.exceptions.PostgresError, "Error"),
)


async def _raise_as_sqlalchemy_would(
    connection: AsyncConnection,
    driver: asyncpg.Connection,
    sql: str,
    arguments: tuple[Any, ...],
    error: Exception,
) -> NoReturn:
    dbapi: Any = connection.dialect.loaded_dbapi
    name = next((n for kind, n in _DBAPI_CLASSES if isinstance(error, kind)), None)
    if name is None:
        if driver.is_closed():
            name = "InterfaceError"  # the connection was lost mid-statement
        else:
            raise error  # not a database error (a cancellation, a codec's ValueError)
    translated = getattr(dbapi, name)(str(error), error)
    translated.__cause__ = error
    lost = driver.is_closed()
    if lost:
        await connection.invalidate(translated)
    raise DBAPIError.instance(
        sql,
        arguments,
        translated,
        dbapi.Error,
        hide_parameters=connection.engine.sync_engine.hide_parameters,
        connection_invalidated=lost,
        dialect=connection.dialect,
    ) from error
