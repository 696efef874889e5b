"""The statement_timeout of API requests, sent with each transaction's BEGIN.

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

from typing import Any

import asyncpg


def timed_connection_class(seconds: float) -> type[asyncpg.Connection]:
    """An asyncpg connection whose every transaction runs under `seconds` of
    statement_timeout (connect with `connection_class=`)."""
    set_local = f"SET LOCAL statement_timeout = '{round(seconds * 1000)}ms';"

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
