"""Hot statements run straight on the driver connection of a request's transaction.

SQLAlchemy's execution of one statement (its compiled cache, the asyncpg
adapter's cursor and prepared-statement lookup, the greenlet hand-off, the
result's metadata) costs about 0.3 ms of CPU more than asyncpg's own on the
benchmark machine: per statement, about half of what the baseline spends on a
whole request (docs/benchmarks/api.notes.md). The few constant statements of
the hottest paths (the caller's key on every request, a config by id, its
chain, an environment check) are `DriverStatement`s: asyncpg runs them on the
connection of the transaction SQLAlchemy began and will commit. Nothing else
changes for them:

- the transaction: if the request has sent nothing yet, the adapter's BEGIN
  is sent first, as SQLAlchemy would (with the statement timeout in it);
- errors: handed back to SQLAlchemy, which wraps them as it wraps its own
  (`DBAPIError` with the SQLSTATE, parameters hidden) and invalidates a lost
  connection, so the API answers them as it answers any database error;
- values: asyncpg decodes with the codecs SQLAlchemy set on the connection
  (json and jsonb as Python values); `Record`s are read by column name.

This leans on the asyncpg adapter's internals of the pinned SQLAlchemy
(`_transaction`, `_start_transaction`, `_connection`, `_handle_exception`,
`Connection._handle_dbapi_exception`); tests/db/test_driver_statements.py
fails if an upgrade changes them.
"""

from __future__ import annotations

from typing import Any, NoReturn

import asyncpg
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection


class DriverStatement:
    """One constant SQL statement with $n parameters, run by asyncpg inside the
    transaction of a SQLAlchemy connection."""

    __slots__ = ("sql",)

    def __init__(self, sql: str) -> None:
        self.sql = sql

    async def fetch(self, connection: AsyncConnection, *arguments: Any) -> list[asyncpg.Record]:
        return await _run(connection, self.sql, "fetch", arguments)  # type: ignore[no-any-return]

    async def fetchrow(self, connection: AsyncConnection, *arguments: Any) -> asyncpg.Record | None:
        return await _run(connection, self.sql, "fetchrow", arguments)

    async def fetchval(self, connection: AsyncConnection, *arguments: Any) -> Any:
        return await _run(connection, self.sql, "fetchval", arguments)

    async def execute(self, connection: AsyncConnection, *arguments: Any) -> None:
        await _run(connection, self.sql, "execute", arguments)


async def _run(
    connection: AsyncConnection, sql: str, method: str, arguments: tuple[Any, ...]
) -> Any:
    adapter: Any = connection.sync_connection.connection.dbapi_connection  # type: ignore[union-attr]
    try:
        if adapter._transaction is None:
            await adapter._start_transaction()
        return await getattr(adapter._connection, method)(sql, *arguments)
    except Exception as error:
        await connection.run_sync(_raise_as_sqlalchemy_would, adapter, sql, arguments, error)
        raise  # not reached: the line above raises


def _raise_as_sqlalchemy_would(
    sync_connection: Connection,
    adapter: Any,
    sql: str,
    arguments: tuple[Any, ...],
    error: Exception,
) -> NoReturn:
    try:
        # The adapter's translation into its DB-API exception classes (raises).
        adapter._handle_exception(error)
    except Exception as translated:
        # The Connection's own handling: DBAPIError, invalidation when lost.
        sync_connection._handle_dbapi_exception(translated, sql, arguments, None, None)
        raise
    raise error
