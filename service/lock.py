"""The session-level PostgreSQL advisory lock that serialises migrators.

Why this shape (see the field notes in the README):
- session level, not `pg_advisory_xact_lock`: it must outlive the per-revision
  commits and `autocommit_block()` steps;
- polled with `pg_try_advisory_lock`, committing between polls, never a blocking
  `pg_advisory_lock`: a blocked waiter holds a transaction open, which
  `CREATE INDEX CONCURRENTLY` in the holder waits for, a deadlock;
- on a dedicated, direct connection: a transaction-pooling pooler would hand the
  session (and its lock) to someone else.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.retry import backoff

POLL_FIRST = 0.05
POLL_MAX = 0.5

_LOCK_HOLDER = text(
    """
    SELECT a.pid, a.application_name, host(a.client_addr) AS client_addr,
           a.backend_start AS since, a.state
      FROM pg_locks AS l
      JOIN pg_stat_activity AS a ON a.pid = l.pid
     WHERE l.locktype = 'advisory'
       AND l.granted
       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
       AND l.classid = :classid AND l.objid = :objid AND l.objsubid = 1
    """
)


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for `pg_*_advisory_lock(bigint)` from a lock name."""
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@dataclass(frozen=True)
class LockHolder:
    """The session holding the migration lock, as pg_locks and pg_stat_activity show it.

    `since` is when the holder's session started: PostgreSQL does not record
    when a granted advisory lock was taken, and the migrator takes it right
    after connecting.
    """

    pid: int
    application_name: str | None
    client_addr: str | None
    since: datetime | None
    state: str | None

    def __str__(self) -> str:
        origin = self.client_addr or "a local socket"
        return f"pid {self.pid} ({self.application_name or 'no application_name'}) from {origin}"

    def as_json(self) -> dict[str, object]:
        data = asdict(self)
        data["since"] = self.since.isoformat() if self.since else None
        return data


async def try_lock(connection: AsyncConnection, key: int) -> bool:
    """Try once to take the lock; commit so no snapshot is held between polls."""
    acquired = await connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": key})
    await connection.commit()
    return bool(acquired)


async def unlock(connection: AsyncConnection, key: int) -> bool:
    """Release the lock taken by this session; False if it did not hold it."""
    released = await connection.scalar(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    await connection.commit()
    return bool(released)


async def find_holder(connection: AsyncConnection, key: int) -> LockHolder | None:
    """Who holds the lock in this database now, if anyone."""
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    result = await connection.execute(
        _LOCK_HOLDER, {"classid": unsigned >> 32, "objid": unsigned & 0xFFFFFFFF}
    )
    row = result.mappings().first()
    await connection.commit()
    return LockHolder(**row) if row else None


async def acquire(
    connection: AsyncConnection,
    key: int,
    on_wait: Callable[[LockHolder | None], None],
    no_longer_needed: Callable[[], Awaitable[bool]] | None = None,
) -> bool:
    """Poll until this session holds the lock (True), telling `on_wait` who holds
    it meanwhile, or until `no_longer_needed` says the holder did the work (False):
    a fleet's waiters then become ready together, not one by one through the lock."""
    polls = 0
    while not await try_lock(connection, key):
        on_wait(await find_holder(connection, key))
        await asyncio.sleep(backoff(polls, POLL_FIRST, POLL_MAX))
        polls += 1
        # Before trying the lock again: did the holder finish the work?
        if no_longer_needed is not None and await no_longer_needed():
            return False
    return True
