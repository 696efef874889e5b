"""The session-level PostgreSQL advisory lock that serialises migrators.

Why this shape (see the field notes in the README):
- session level, not `pg_advisory_xact_lock`: it must outlive the per-revision
  commits and `autocommit_block()` steps;
- polled with `pg_try_advisory_lock`, committing between polls, never a blocking
  `pg_advisory_lock`: a blocked waiter holds a transaction open, which
  `CREATE INDEX CONCURRENTLY` in the holder waits for, a deadlock;
- on a dedicated, direct connection: a transaction-pooling pooler would hand the
  session (and its lock) to someone else. Because a misconfigured URL can still
  lead through one, the session proves it is real before it trusts the lock
  (`acquire`), and again inside every revision's transaction (`check_session`):
  the backend that took the lock runs the revision and still holds the lock.
- one migrator per database, whatever its lock name: a migrator that got its
  own lock backs off while another migrator session (of this application, by
  its application_name) holds an advisory lock, so services that share a
  database under different lock names never run revisions at the same time.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from alembic_lockstep.config import MigrationConfig
from alembic_lockstep.retry import backoff

POLL_FIRST = 0.05
POLL_MAX = 0.5
# Where a connection keeps (backend pid that took the lock, the lock):
# Connection.info belongs to the database connection, shared by its async and
# sync faces.
_OWNER = "migration_lock_owner"

_IN_THIS_DATABASE = (
    "l.locktype = 'advisory' AND l.granted"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
_THIS_KEY = "l.classid = :classid AND l.objid = :objid AND l.objsubid = 1"
_HOLDER_COLUMNS = (
    "a.pid, a.application_name, host(a.client_addr) AS client_addr,"
    " a.backend_start AS since, a.state"
)
_LOCK_HOLDER = text(
    f"SELECT {_HOLDER_COLUMNS} FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid"
    f" WHERE {_IN_THIS_DATABASE} AND {_THIS_KEY}"
)
_OTHER_MIGRATOR = text(
    f"SELECT {_HOLDER_COLUMNS} FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid"
    f" WHERE {_IN_THIS_DATABASE} AND l.pid <> pg_backend_pid()"
    " AND a.application_name LIKE :migrators AND NOT (" + _THIS_KEY + ")"
    " ORDER BY a.backend_start LIMIT 1"
)
_THIS_BACKEND = text(
    "SELECT pg_backend_pid() AS pid, EXISTS (SELECT 1 FROM pg_locks AS l"
    f" WHERE {_IN_THIS_DATABASE} AND {_THIS_KEY} AND l.pid = pg_backend_pid()) AS holds"
)
_END_STRANDED = text(
    f"SELECT pg_terminate_backend(l.pid) FROM pg_locks AS l WHERE {_IN_THIS_DATABASE}"
    f" AND {_THIS_KEY} AND l.pid = :pid"
)


def pooler_advice(migration_url: str) -> str:
    """What to do when the migration connection is not one server session;
    `migration_url` is how the application names that URL for its operators."""
    return (
        "the migration lock needs one server session for the whole migration, with the "
        "session settings it sends at connect; a pooler in front of PostgreSQL does not keep "
        "the first (PgBouncer with pool_mode=transaction) or refuses the second (any "
        f"pool_mode): point {migration_url} at PostgreSQL itself (the application's own "
        "connections may stay on the pooler)"
    )


class NotARealSession(Exception):
    """The migration connection is not one server session: its lock cannot be trusted.
    The message says what showed it, and what to do."""

    def __init__(self, finding: str, advice: str):
        super().__init__(f"{finding}: {advice}")


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for `pg_*_advisory_lock(bigint)` from a lock name."""
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@dataclass(frozen=True)
class MigrationLock:
    """The advisory lock of one lock name; the application_name prefix every
    migrator session of the application has (`MigrationConfig.migrator_name`),
    by which migrators under other lock names are recognised; and the advice
    a refused session gives (`pooler_advice`)."""

    name: str
    migrators: str
    advice: str

    @classmethod
    def of(cls, config: MigrationConfig) -> MigrationLock:
        return cls(
            config.lock_name, config.migrator_name, pooler_advice(config.named("migration_url"))
        )

    @property
    def key(self) -> int:
        return lock_key(self.name)

    @property
    def parameters(self) -> dict[str, int]:
        """pg_locks shows a bigint advisory key as two 32-bit halves."""
        key = self.key
        unsigned = key & 0xFFFFFFFFFFFFFFFF
        return {"key": key, "classid": unsigned >> 32, "objid": unsigned & 0xFFFFFFFF}


@dataclass(frozen=True)
class LockHolder:
    """The session holding the migration lock, as pg_locks and pg_stat_activity show it.

    `since` is when the holder's session started: PostgreSQL does not record
    when a granted advisory lock was taken, and the migrator takes it right
    after connecting. `other_lock_name` is true for a migrator that holds the
    lock of another MIGRATION_LOCK_NAME on this database.
    """

    pid: int
    application_name: str | None
    client_addr: str | None
    since: datetime | None
    state: str | None
    other_lock_name: bool = False

    def __str__(self) -> str:
        origin = self.client_addr or "a local socket"
        described = (
            f"pid {self.pid} ({self.application_name or 'no application_name'}) from {origin}"
        )
        return f"{described}, under another lock name" if self.other_lock_name else described

    def as_json(self) -> dict[str, object]:
        data = asdict(self)
        data["since"] = self.since.isoformat() if self.since else None
        return data


async def _try_lock(connection: AsyncConnection, lock: MigrationLock) -> bool:
    """Try once to take the lock; commit so no snapshot is held between polls.

    Advisory locks are re-entrant: a server session that already holds the key
    would grant it again. Ours never asks twice, so a session that holds it
    already is shared with another client (a pooler): refuse, touching nothing.
    """
    this = (await connection.execute(_THIS_BACKEND, lock.parameters)).one()
    if this.holds:
        await connection.commit()
        raise NotARealSession(
            f"server session {this.pid} already held the migration lock when this migrator "
            "connected: it is shared with another client",
            lock.advice,
        )
    acquired = await connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), lock.parameters)
    await connection.commit()
    if acquired:
        connection.info[_OWNER] = (this.pid, lock)
    return bool(acquired)


async def prove_session(connection: AsyncConnection, lock: MigrationLock) -> None:
    """Raise NotARealSession, leaving no lock behind, unless this connection is
    one server session that holds the lock.

    A second connection opens a transaction while this one looks at itself: on
    a direct connection the two are different backends and this one is still
    the backend that took the lock. A transaction pooler hands the second
    connection the server session just released (the lock holder), or this one
    another server session; either shows.
    """
    owner, _ = connection.info[_OWNER]
    async with connection.engine.connect() as second:
        second_pid = await second.scalar(text("SELECT pg_backend_pid()"))
        this = (await connection.execute(_THIS_BACKEND, lock.parameters)).one()
        await connection.commit()
        if second_pid != owner and this.pid == owner and this.holds:
            return
        connection.info.pop(_OWNER, None)
        if second_pid == owner:
            # The second connection runs on the lock holder: release it there.
            await second.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": lock.key})
            await second.commit()
        else:
            await _end_stranded_lock(connection, lock.parameters, owner)
    raise NotARealSession(
        f"server session {owner} took the migration lock, then the next transaction ran on "
        f"server session {this.pid} and another connection's on {second_pid}",
        lock.advice,
    )


def check_session(connection: Connection) -> None:
    """Inside a revision's transaction, before it commits: the backend that took the
    lock runs it and still holds the lock; else raise NotARealSession (the
    revision then rolls back). Does nothing on a connection that took no lock."""
    if _OWNER not in connection.info:
        return
    owner, lock = connection.info[_OWNER]
    this = connection.execute(_THIS_BACKEND, lock.parameters).one()
    if this.pid != owner or not this.holds:
        raise NotARealSession(
            f"server session {owner} took the migration lock, but this revision ran on "
            f"server session {this.pid}" + ("" if this.holds else ", which does not hold the lock"),
            lock.advice,
        )


async def release(connection: AsyncConnection, lock: MigrationLock) -> bool:
    """Release the lock taken by this session. False when the session did not hold
    it (its server session changed under it): the lock left on the server session
    that took it is then ended, with that session, so nothing stays held."""
    owner, _ = connection.info.pop(_OWNER, (None, None))
    this = (
        await connection.execute(
            text("SELECT pg_backend_pid() AS pid, pg_advisory_unlock(:key) AS released"),
            {"key": lock.key},
        )
    ).one()
    await connection.commit()
    if this.released:
        return True
    if owner is not None and owner != this.pid:
        await _end_stranded_lock(connection, lock.parameters, owner)
    return False


async def _end_stranded_lock(
    connection: AsyncConnection, parameters: dict[str, int], owner: int
) -> None:
    """End the server session `owner` if it still holds the lock: only closing
    that session frees a lock stranded on a pooled server connection."""
    await connection.execute(_END_STRANDED, {**parameters, "pid": owner})
    await connection.commit()


async def find_holder(connection: AsyncConnection, lock: MigrationLock) -> LockHolder | None:
    """Who holds the lock in this database now, if anyone; else a migrator that
    holds the lock of another lock name."""
    row = (await connection.execute(_LOCK_HOLDER, lock.parameters)).mappings().first()
    if row is not None:
        await connection.commit()
        return LockHolder(**row)
    other = await _other_migrator(connection, lock)
    await connection.commit()
    return other


async def _other_migrator(connection: AsyncConnection, lock: MigrationLock) -> LockHolder | None:
    parameters = {**lock.parameters, "migrators": _like_prefix(lock.migrators)}
    row = (await connection.execute(_OTHER_MIGRATOR, parameters)).mappings().first()
    return LockHolder(**row, other_lock_name=True) if row else None


async def acquire(
    connection: AsyncConnection,
    lock: MigrationLock,
    on_wait: Callable[[LockHolder | None], None],
    no_longer_needed: Callable[[], Awaitable[bool]] | None = None,
) -> bool:
    """Poll until this session holds the lock and no other migrator holds one
    (True), telling `on_wait` who holds it meanwhile, or until `no_longer_needed`
    says the holder did the work (False): a fleet's waiters then become ready
    together, not one by one through the lock. Raises NotARealSession."""
    polls = 0
    while True:
        if await _try_lock(connection, lock):
            await prove_session(connection, lock)
            other = await _other_migrator(connection, lock)
            await connection.commit()
            if other is None:
                return True
            # Both may have taken their own locks at once: both step back, and
            # the jitter of the next poll lets one of them through.
            await release(connection, lock)
            on_wait(other)
        else:
            on_wait(await find_holder(connection, lock))
        await asyncio.sleep(backoff(polls, POLL_FIRST, POLL_MAX))
        polls += 1
        # Before trying the lock again: did the holder finish the work?
        if no_longer_needed is not None and await no_longer_needed():
            return False


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern for names that start with `prefix` (its own % and _ literal)."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
