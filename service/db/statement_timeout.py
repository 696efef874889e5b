"""The statement_timeout of API requests: on the session where it can be, and
with each transaction's BEGIN.

A read that is one statement runs outside any transaction (no BEGIN to ride
on): the session's own statement_timeout must bound it. Directly, the service
sets it as a startup parameter of every application session (no round trip;
service/db/engines.py). Through a transaction-pooling PgBouncer it cannot:
the operator sets it where the pooler's server sessions get it, on the role
(`ALTER ROLE app_user SET statement_timeout = '10s'`) or in PgBouncer's
`connect_query`. Each worker reads the setting of the pooler's sessions once
(`ReadBound`): when it is missing or longer than REQUEST_STATEMENT_TIMEOUT,
the worker warns once and runs its reads in a transaction whose BEGIN carries
the timeout, as writes do: bounded still, at two round trips more a read.

A startup parameter would cost no round trip, but a transaction-pooling
PgBouncer does not pass it on (it refuses unknown startup parameters, or
ignores those listed in ignore_startup_parameters), and a session-level SET
would stay behind on a server connection other clients then share. SET LOCAL
holds for one transaction, on whatever server connection runs it; sent in the
same simple-query message as the BEGIN asyncpg sends (one message, "BEGIN;SET
LOCAL statement_timeout = '10000ms';") it costs no round trip either, directly
or through the pooler.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg

logger = logging.getLogger(__name__)


def timed_connection_class(seconds: float) -> type[asyncpg.Connection]:
    """An asyncpg connection whose every transaction runs under `seconds` of
    statement_timeout (connect with `connection_class=`)."""
    set_local = f"SET LOCAL statement_timeout = '{milliseconds(seconds)}ms';"

    class TimedConnection(asyncpg.Connection):  # type: ignore[misc]
        __slots__ = ()

        async def execute(
            self,
            query: str,
            *args: Any,
            timeout: float | None = None,  # noqa: ASYNC109 (asyncpg's own signature)
        ) -> str:
            # asyncpg's Transaction.start() sends "BEGIN;" (or "BEGIN ISOLATION LEVEL ...;").
            if not args and query.startswith("BEGIN") and query.endswith(";"):
                query += set_local
            result: str = await super().execute(query, *args, timeout=timeout)
            return result

    return TimedConnection


def milliseconds(seconds: float) -> int:
    return round(seconds * 1000)


class ReadBound:
    """Whether the sessions of the application's pool bound a statement that
    runs outside a transaction by REQUEST_STATEMENT_TIMEOUT."""

    __slots__ = ("_checking", "_holds", "_limit")

    def __init__(self, seconds: float, pooler: str) -> None:
        self._limit = milliseconds(seconds)
        # No timeout to keep, or set on every session at its start.
        self._holds: bool | None = True if seconds == 0 or pooler == "none" else None
        # The first reads of a worker arrive together: one of them asks.
        self._checking = asyncio.Lock()

    @property
    def known(self) -> bool | None:
        """Whether it holds, None until the pooler's sessions were read."""
        return self._holds

    async def holds(self, driver: asyncpg.Connection) -> bool:
        """Asked of every read; the pooler's sessions are read once (a role's
        or a `connect_query`'s setting holds for every session it serves)."""
        if self._holds is None:
            async with self._checking:
                if self._holds is None:
                    await self._check(driver)
        return bool(self._holds)

    async def _check(self, driver: asyncpg.Connection) -> None:
        setting = await driver.fetchval(
            "SELECT setting::bigint FROM pg_settings WHERE name = 'statement_timeout'"
        )
        self._holds = 0 < setting <= self._limit
        if not self._holds:
            logger.warning(
                "the pooler's sessions have statement_timeout %s ms, not at most "
                "REQUEST_STATEMENT_TIMEOUT (%s ms): reads run in a transaction that sets it, "
                "two round trips more each; set it on the database role "
                "(ALTER ROLE ... SET statement_timeout) or in PgBouncer's connect_query "
                "(docs/operations/poolers.md)",
                setting,
                self._limit,
            )
