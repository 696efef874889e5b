"""The migrator's connections: one dedicated, unpooled session for the lock and
the DDL, and a small pool for a one-off migrator's own reads.

Both go to `migration_url`, which must reach PostgreSQL directly: the advisory
lock is tied to one server session.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from alembic_lockstep.config import MigrationConfig
from alembic_lockstep.retry import lock_timeout

# PostgreSQL truncates application_name to 63 bytes.
_APPLICATION_NAME_LENGTH = 63

# Behind a transaction-pooling PgBouncer (before 1.21) consecutive transactions
# of one client connection may run on different server connections: keep no
# prepared statements across transactions, and give those made a unique name.
# The migration connection always works this way: it runs few statements, and a
# migration URL that goes through such a pooler by mistake must still get as far
# as proving it (lock.py) instead of failing on a lost prepared statement.
NO_PREPARED_STATEMENT_CACHE: dict[str, Any] = {
    "statement_cache_size": 0,
    "prepared_statement_cache_size": 0,
    "prepared_statement_name_func": lambda: f"__asyncpg_{uuid.uuid4()}__",
}


def session_name(application: str, role: str) -> str:
    """Name a session after what it does and where it runs, for pg_stat_activity."""
    name = f"{application} {role} {socket.gethostname()} pid={os.getpid()}"
    if len(name) > _APPLICATION_NAME_LENGTH:
        name = f"{application} {role} pid={os.getpid()} {socket.gethostname()}"
    return name[:_APPLICATION_NAME_LENGTH]


def milliseconds(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


def migration_server_settings(config: MigrationConfig) -> dict[str, str]:
    """Session settings of the migration connection.

    lock_timeout keeps a revision from queueing behind (and in front of) live
    traffic; the keepalives let the server notice a vanished migrator and free
    its advisory lock in about a minute instead of two hours;
    client_connection_check_interval (PostgreSQL 14+) makes the server notice a
    killed migrator during a long statement, instead of at its end.
    """
    idle = config.keepalive_idle
    return {
        "application_name": session_name(config.application_name, "migrator"),
        "lock_timeout": milliseconds(lock_timeout(0, config.lock_timeout)),
        "statement_timeout": milliseconds(config.statement_timeout),
        "tcp_keepalives_idle": str(idle),
        "tcp_keepalives_interval": str(max(1, idle // 2)),
        "tcp_keepalives_count": "3",
        "tcp_user_timeout": str(idle * 3 * 1000),
        "client_connection_check_interval": "1000",
    }


def create_migration_engine(config: MigrationConfig) -> AsyncEngine:
    """An engine that opens a fresh connection each time and pools nothing."""
    return _engine(config, migration_server_settings(config), poolclass=NullPool)


def create_reads_engine(config: MigrationConfig) -> AsyncEngine:
    """A small pool on the migration URL for a one-off migrator's own reads (the
    revision, the audit trail): `migrate` then needs no rights of the
    application's role."""
    server_settings = {"application_name": session_name(config.application_name, "migrator")}
    return _engine(config, server_settings, pool_size=1, max_overflow=0)


def _engine(
    config: MigrationConfig, server_settings: dict[str, str], **options: Any
) -> AsyncEngine:
    connect_args = {
        "timeout": config.connect_timeout,
        "server_settings": server_settings,
        **NO_PREPARED_STATEMENT_CACHE,
        **config.connect_args,
    }
    # hide_parameters keeps statement parameters (which may be secrets) out of
    # exception messages.
    return create_async_engine(
        config.migration_url, hide_parameters=True, connect_args=connect_args, **options
    )
