"""The `alembic` command line's connection: direct, locked like the service's."""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy.engine import Connection

from service.db.engines import create_migration_engine
from service.migrations import lock
from settings import load_settings

logger = logging.getLogger("alembic.env")


async def run_locked(run: Callable[[Connection], None]) -> None:
    """Run `run` on a migration connection while holding the migration lock."""
    settings = load_settings()
    key = lock.lock_key(settings.migration_lock_name)
    engine = create_migration_engine(settings)
    try:
        async with engine.connect() as connection:
            await lock.acquire(connection, key, _HolderReport())
            try:
                await connection.run_sync(run)
                await connection.commit()
            finally:
                await connection.rollback()
                if not await lock.release(connection, key):
                    logger.error(
                        "the migration lock was not held by this session when it was released: %s",
                        lock.POOLER_ADVICE,
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
