"""The `alembic` command line's connection: direct, and locked like the bootstrap's.

An application's env.py calls `run_locked` when Alembic runs from the command
line (environment.py does), so a hand-run upgrade and a starting fleet never
migrate at the same time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy.engine import Connection

from alembic_lockstep import lock
from alembic_lockstep.config import MigrationConfig
from alembic_lockstep.connections import create_migration_engine

logger = logging.getLogger("alembic.env")


async def run_locked(config: MigrationConfig, run: Callable[[Connection], None]) -> None:
    """Run `run` on a migration connection while holding the migration lock."""
    migration_lock = lock.MigrationLock.of(config)
    engine = create_migration_engine(config)
    try:
        async with engine.connect() as connection:
            await lock.acquire(connection, migration_lock, _HolderReport())
            try:
                await connection.run_sync(run)
                await connection.commit()
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


class _HolderReport:
    """Logs who holds the lock when that changes, not at every poll."""

    def __init__(self) -> None:
        self.last: lock.LockHolder | None = None

    def __call__(self, holder: lock.LockHolder | None) -> None:
        if holder is None or holder != self.last:
            logger.info("waiting for the migration lock, held by %s", holder)
        self.last = holder
