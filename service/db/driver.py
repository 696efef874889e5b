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
  inside it. A read that is one statement needs no transaction: on an
  `Autocommit` connection (the driver's own pool's, service/db/statement_pool.py,
  or one of SQLAlchemy's never begun) every statement runs on asyncpg
  directly and commits on its own, bounded by the session's statement_timeout
  (service/db/engines.py);
- errors: wrapped as SQLAlchemy wraps its own: the DB-API class of the
  dialect's module (IntegrityError for a violated constraint, answered 409),
  `DBAPIError` with the SQLSTATE, parameters hidden as the engine hides them,
  and a lost connection invalidated (its pool replaces it);
- values: asyncpg decodes with the codecs SQLAlchemy sets on its connections,
  and the statement pool on its own (json and jsonb as Python values); rows
  are read by column name (asyncpg's `Record` or SQLAlchemy's `RowMapping`,
  both mappings);
- prepared statements: asyncpg's statement cache of the connection, sized by
  the engine's settings (off behind a transaction-pooling PgBouncer).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NoReturn

import asyncpg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

Row = Mapping[Any, Any]


class Autocommit:
    """A connection used outside any transaction: each statement on it
    commits on its own. A read that is one statement needs no more (it is
    atomic and sees one snapshot), and saves the BEGIN and the COMMIT. It is
    the driver's own pool's (service/db/statement_pool.py), or a pooled
    SQLAlchemy connection SQLAlchemy never begins on (`autocommit()`), which
    then returns to its pool with nothing to roll back.

    `engine` names the errors as SQLAlchemy's would be named; `lost` is told
    of a connection found lost (SQLAlchemy's is invalidated; asyncpg's pool
    replaces its own); `connection` is the SQLAlchemy connection it is, None
    for the driver pool's."""

    __slots__ = ("connection", "driver", "engine", "lost")

    def __init__(
        self,
        driver: asyncpg.Connection,
        engine: AsyncEngine,
        lost: Callable[[BaseException], Awaitable[None]],
        connection: AsyncConnection | None = None,
    ) -> None:
        self.driver = driver
        self.engine = engine
        self.lost = lost
        self.connection = connection


async def autocommit(connection: AsyncConnection) -> Autocommit:
    """`connection`, not yet begun, for statements that commit on their own."""
    raw = await connection.get_raw_connection()
    return Autocommit(raw.driver_connection, connection.engine, connection.invalidate, connection)


Connection = AsyncConnection | Autocommit


class DriverStatement:
    """One constant SQL statement with $n parameters, run by asyncpg inside the
    transaction of a SQLAlchemy connection."""

    __slots__ = ("sql",)

    def __init__(self, sql: str) -> None:
        self.sql = sql

    async def fetch(self, connection: Connection, *arguments: Any) -> list[Row]:
        driver = await _driver(connection)
        if driver is None:
            assert isinstance(connection, AsyncConnection)
            result = await connection.exec_driver_sql(self.sql, arguments)
            return list(result.mappings().all())
        rows: list[Row] = await self._on(connection, driver, driver.fetch, arguments)
        return rows

    async def fetchrow(self, connection: Connection, *arguments: Any) -> Row | None:
        driver = await _driver(connection)
        if driver is None:
            assert isinstance(connection, AsyncConnection)
            result = await connection.exec_driver_sql(self.sql, arguments)
            return result.mappings().first()
        row: Row | None = await self._on(connection, driver, driver.fetchrow, arguments)
        return row

    async def fetchval(self, connection: Connection, *arguments: Any) -> Any:
        driver = await _driver(connection)
        if driver is None:
            assert isinstance(connection, AsyncConnection)
            result = await connection.exec_driver_sql(self.sql, arguments)
            return result.scalar()
        return await self._on(connection, driver, driver.fetchval, arguments)

    async def execute(self, connection: Connection, *arguments: Any) -> None:
        driver = await _driver(connection)
        if driver is None:
            assert isinstance(connection, AsyncConnection)
            await connection.exec_driver_sql(self.sql, arguments)
            return
        await self._on(connection, driver, driver.execute, arguments)

    async def _on(
        self,
        connection: Connection,
        driver: asyncpg.Connection,
        method: Callable[..., Awaitable[Any]],
        arguments: tuple[Any, ...],
    ) -> Any:
        try:
            return await method(self.sql, *arguments)
        except Exception as error:
            lost = connection.lost if isinstance(connection, Autocommit) else connection.invalidate
            await _raise_as_sqlalchemy_would(
                connection.engine, lost, driver, self.sql, arguments, error
            )


async def _driver(connection: Connection) -> asyncpg.Connection | None:
    """The asyncpg connection under `connection` when it commits on its own or
    is inside the transaction SQLAlchemy began; None before that."""
    if isinstance(connection, Autocommit):
        return connection.driver
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
    engine: AsyncEngine,
    lost_by: Callable[[BaseException], Awaitable[None]],
    driver: asyncpg.Connection,
    sql: str,
    arguments: tuple[Any, ...],
    error: Exception,
) -> NoReturn:
    lost = _closed(driver)
    wrapped = as_sqlalchemy_error(engine, error, sql, arguments, lost=lost)
    if wrapped is None:
        raise error  # not a database error (a cancellation, a codec's ValueError)
    if lost:
        await lost_by(wrapped)
    raise wrapped from error


def as_sqlalchemy_error(
    engine: AsyncEngine,
    error: Exception,
    sql: str | None = None,
    arguments: tuple[Any, ...] | None = None,
    *,
    lost: bool = False,
) -> DBAPIError | None:
    """`error` of asyncpg as SQLAlchemy's execution would raise it (None for
    an error that is not the database's); `lost`: the connection is gone."""
    name = next((n for kind, n in _DBAPI_CLASSES if isinstance(error, kind)), None)
    if name is None:
        if not lost:
            return None
        name = "InterfaceError"  # the connection was lost mid-statement
    dbapi: Any = engine.dialect.loaded_dbapi
    translated = getattr(dbapi, name)(str(error), error)
    translated.__cause__ = error
    wrapped: DBAPIError = DBAPIError.instance(
        sql,
        arguments,
        translated,
        dbapi.Error,
        hide_parameters=engine.sync_engine.hide_parameters,
        connection_invalidated=lost,
        dialect=engine.dialect,
    )
    return wrapped


def _closed(driver: asyncpg.Connection) -> bool:
    """Whether the connection is gone. A connection of asyncpg's pool that
    the server closed is given back to its pool at once, and its proxy then
    answers nothing but InterfaceError: gone too."""
    try:
        closed: bool = driver.is_closed()
    except asyncpg.exceptions.InterfaceError:
        return True
    return closed
