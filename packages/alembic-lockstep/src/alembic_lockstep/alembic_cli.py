"""The `alembic` command line's connection: direct, and locked like the bootstrap's.

An application's env.py calls `run_locked` when Alembic runs from the command
line (environment.py does), so a hand-run upgrade and a starting fleet never
migrate at the same time. A revision that cannot get its table locks within
lock_timeout is rolled back and the command goes on from where it stopped,
with a longer lock_timeout, as the bootstrap does (retry.py): a hand-run
upgrade or downgrade does not fail on the first lock it meets (a report's
transaction, or the autovacuum that follows a large backfill).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from alembic_lockstep import lock
from alembic_lockstep.config import MigrationConfig
from alembic_lockstep.connections import create_migration_engine, milliseconds
from alembic_lockstep.errors import describe_error, is_lock_timeout
from alembic_lockstep.retry import lock_retry_pause, lock_timeout

logger = logging.getLogger("alembic.env")


async def run_locked(config: MigrationConfig, run: Callable[[Connection], None]) -> None:
    """Run `run` on a migration connection while holding the migration lock."""
    migration_lock = lock.MigrationLock.of(config)
    engine = create_migration_engine(config)
    try:
        async with engine.connect() as connection:
            await lock.acquire(connection, migration_lock, _HolderReport())
            try:
                await _run_retrying_lock_timeouts(connection, config, run)
            finally:
                await connection.rollback()
                if not await lock.release(connection, migration_lock):
                    logger.error(
                        "the migration lock was not held by this session when it was released: %s",
                        migration_lock.advice,
                    )
                    await connection.invalidate()
    finally:
        await engine.dispose()


async def _run_retrying_lock_timeouts(
    connection: AsyncConnection, config: MigrationConfig, run: Callable[[Connection], None]
) -> None:
    """Run `run` (Alembic's command, one transaction per revision); on a
    revision's lock_timeout, roll it back and run again from the revisions
    already committed, each attempt waiting twice as long for its locks, up to
    `config.lock_timeout`, `config.lock_retries` times."""
    retries = config.lock_retries
    for attempt in range(retries + 1):
        waits = lock_timeout(attempt, config.lock_timeout)
        # A session setting: it also covers the statements of autocommit blocks.
        await connection.execute(text(f"SET lock_timeout = '{milliseconds(waits)}'"))
        await connection.commit()
        try:
            await connection.run_sync(run)
            await connection.commit()
            return
        except Exception as error:
            if not is_lock_timeout(error) or attempt == retries:
                raise
            await connection.rollback()
            delay = lock_retry_pause(attempt)
            logger.warning(
                "a revision could not get its locks within %s (%s); retry %d of %d in %.1fs, "
                "waiting up to %s",
                milliseconds(waits),
                describe_error(error),
                attempt + 1,
                retries,
                delay,
                milliseconds(lock_timeout(attempt + 1, config.lock_timeout)),
            )
        await asyncio.sleep(delay)


class _HolderReport:
    """Logs who holds the lock when that changes, not at every poll."""

    def __init__(self) -> None:
        self.last: lock.LockHolder | None = None

    def __call__(self, holder: lock.LockHolder | None) -> None:
        if holder is None or holder != self.last:
            logger.info("waiting for the migration lock, held by %s", holder)
        self.last = holder
