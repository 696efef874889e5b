"""Does this process fit in the database's connections? Checked once at startup.

Each worker process keeps up to DATABASE_POOL_SIZE + DATABASE_MAX_OVERFLOW
connections for requests, and a migrating one two more for a moment (the
migration session and the second connection that proves it is real), and one
more, always, that listens for config events (service/api/sdk/event_hub.py,
direct to the server even behind a pooler: a pooler cannot carry LISTEN). The
server allows max_connections minus the slots it keeps for superusers (and,
from PostgreSQL 16, for roles with pg_use_reserved_connections). Behind a
transaction-pooling pooler the request pool counts against the pooler, not the
server, and only the migration and listening connections reach PostgreSQL.
"""

from __future__ import annotations

import logging
import os

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from settings import Settings

logger = logging.getLogger("service.db.connection_budget")

MIGRATION_CONNECTIONS = 2
EVENT_CONNECTIONS = 1
_SERVER_LIMITS = text(
    "SELECT current_setting('max_connections')::int AS max_connections,"
    " current_setting('superuser_reserved_connections')::int"
    " + coalesce(current_setting('reserved_connections', true)::int, 0) AS reserved"
)


def worker_count() -> int:
    """Worker processes of this server, as `python -m service`, uvicorn and gunicorn
    take it by default: WEB_CONCURRENCY (`python -m service --workers N` sets it)."""
    raw = os.environ.get("WEB_CONCURRENCY", "")
    return int(raw) if raw.isascii() and raw.isdigit() and int(raw) > 0 else 1


def connections_needed(settings: Settings, workers: int) -> int:
    per_worker = MIGRATION_CONNECTIONS + EVENT_CONNECTIONS
    if settings.database_pooler == "none":
        per_worker += settings.database_pool_size + settings.database_max_overflow
    return per_worker * workers


async def warn_if_over_budget(connection: AsyncConnection, settings: Settings) -> None:
    """Log a warning when this process alone may open more connections than the
    server accepts from ordinary roles."""
    limits = (await connection.execute(_SERVER_LIMITS)).one()
    await connection.commit()
    allowed = limits.max_connections - limits.reserved
    workers = worker_count()
    needed = connections_needed(settings, workers)
    if needed > allowed:
        logger.warning(
            "this process may open %d connections (%d workers x (DATABASE_POOL_SIZE %d + "
            "DATABASE_MAX_OVERFLOW %d + %d for migrating + %d listening for config events)) "
            "but the server accepts %d "
            "(max_connections %d - %d reserved), for every replica together: lower the pool "
            "size or the workers, or put a pooler in front (see docs/operations/poolers.md, Sizing the pools)",
            needed,
            workers,
            settings.database_pool_size if settings.database_pooler == "none" else 0,
            settings.database_max_overflow if settings.database_pooler == "none" else 0,
            MIGRATION_CONNECTIONS,
            EVENT_CONNECTIONS,
            allowed,
            limits.max_connections,
            limits.reserved,
        )
