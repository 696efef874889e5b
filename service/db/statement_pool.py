"""The driver's own pool, for the statements that commit on their own.

A read that is one statement, and the usual create, run outside any
transaction (service/db/driver.py, `Autocommit`). Taking their connection from
SQLAlchemy's pool and giving it back (the pool's checkout and return, its
events and reset, a greenlet hand-off each way) cost about 0.13 ms of CPU a
request under load, a fifth of a point read's, against a few hundredths for
asyncpg's own pool (docs/benchmarks/api.notes.md). So they take it from
asyncpg's pool, through its public API, with the same session arguments as the
engine's (service/db/engines.py): the statement_timeout of the session, TLS,
the statement cache (none behind a transaction-pooling pooler), and the JSON
codecs SQLAlchemy's dialect sets (json and jsonb as Python values, decoded
alike from either pool: service/db/json_values.py). SQLAlchemy's pool keeps the transactions.

The two share a worker's DATABASE_POOL_SIZE (DATABASE_STATEMENT_POOL_SHARE),
so a worker opens no more connections than before. Like SQLAlchemy's, the
pool opens its connections when first asked (none while the schema is behind
head: requests are refused until then), and replaces one found closed when it
next lends it. A connection refused, or lost mid-statement, is raised as
SQLAlchemy's error (answered 503 with Retry-After).
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.driver import Autocommit, as_sqlalchemy_error
from service.db.engines import session_arguments
from service.db.json_values import loads
from settings import Settings

logger = logging.getLogger(__name__)


class StatementPool:
    """asyncpg's pool of a worker's connections for statements that commit on
    their own; `acquire` lends one as an `Autocommit`, `release` takes it back."""

    __slots__ = ("_engine", "_pool")

    def __init__(self, pool: asyncpg.Pool, engine: AsyncEngine) -> None:
        self._pool = pool
        self._engine = engine

    async def acquire(self) -> Autocommit:
        """A connection, made when none is free. A connection refused (the
        server starting or stopping, full, a rotated secret) is raised as
        SQLAlchemy's pool raises it, so the request is answered as any such
        failure is (503 with Retry-After), not as an error of the service."""
        try:
            driver = await self._pool.acquire()
        except Exception as error:
            wrapped = as_sqlalchemy_error(self._engine, error)
            if wrapped is None:
                raise
            raise wrapped from error
        return Autocommit(driver, self._engine, self._lost)

    async def release(self, lent: Autocommit) -> None:
        """Take `lent` back. A connection that cannot be made ready again is
        closed by asyncpg (a new one replaces it): logged, not raised, since
        the request's own statements are done by now."""
        try:
            await self._pool.release(lent.driver)
        except Exception as error:
            logger.warning("a statement connection was closed on its return: %r", error)

    async def close(self) -> None:
        await self._pool.close()

    async def _lost(self, _: BaseException) -> None:
        # asyncpg's pool replaces a closed connection when it next lends it
        # (one the server closed while idle too): nothing to invalidate.
        return


async def open_statement_pool(settings: Settings, engine: AsyncEngine) -> StatementPool | None:
    """The worker's statement pool, None when the settings give it no
    connection (its statements then run in SQLAlchemy's pool)."""
    size = settings.statement_pool_size
    if size == 0:
        return None
    url, arguments = session_arguments(settings)
    pool = await asyncpg.create_pool(
        host=url.host or url.query.get("host"),
        port=url.port,
        user=url.username,
        password=url.password,
        database=url.database,
        min_size=0,
        max_size=size,
        init=_json_codecs,
        reset=_reset,
        **arguments,
    )
    return StatementPool(pool, engine)


async def _json_codecs(connection: asyncpg.Connection) -> None:
    """json and jsonb as Python values, as SQLAlchemy's asyncpg dialect sets
    them on its connections (binary format; jsonb's starts with its version)."""
    await connection.set_type_codec(
        "json",
        encoder=str.encode,
        decoder=_decode_json,
        schema="pg_catalog",
        format="binary",
    )
    await connection.set_type_codec(
        "jsonb",
        encoder=_encode_jsonb,
        decoder=_decode_jsonb,
        schema="pg_catalog",
        format="binary",
    )


def _decode_json(value: bytes) -> Any:
    return loads(value)


def _encode_jsonb(value: str) -> bytes:
    return b"\x01" + value.encode()


def _decode_jsonb(value: bytes) -> Any:
    return loads(value[1:])


async def _reset(connection: asyncpg.Connection) -> None:
    """Nothing of a session to reset on return: only statements that commit on
    their own run here, so none sets, listens or locks for longer. (asyncpg's
    default reset is a round trip each time: RESET ALL, UNLISTEN, CLOSE ALL,
    advisory unlock.) A transaction left open would be a bug; rolled back."""
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")
