"""Engines and connections.

Application traffic uses a pooled engine on DATABASE_URL (which may point at a
pooler). The migrator uses one dedicated, unpooled connection on the direct
MIGRATION_DATABASE_URL: the advisory lock is tied to that one server session.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from service.statement_timeout import timed_connection_class
from settings import Settings

# PostgreSQL truncates application_name to 63 bytes.
_APPLICATION_NAME_LENGTH = 63


def application_name(role: str) -> str:
    """Name a session after what it does and where it runs, for pg_stat_activity."""
    name = f"platform-service {role} {socket.gethostname()} pid={os.getpid()}"
    if len(name) > _APPLICATION_NAME_LENGTH:
        name = f"platform-service {role} pid={os.getpid()} {socket.gethostname()}"
    return name[:_APPLICATION_NAME_LENGTH]


def _connect_args(settings: Settings, server_settings: dict[str, str]) -> dict[str, Any]:
    return {"timeout": settings.database_connect_timeout, "server_settings": server_settings}


def create_app_engine(settings: Settings) -> AsyncEngine:
    """The pooled engine for requests and readiness checks."""
    connect_args = _connect_args(settings, {"application_name": application_name("app")})
    if settings.database_pooler == "transaction":
        connect_args.update(_TRANSACTION_POOLER_ARGS)
    if settings.request_statement_timeout > 0:
        connect_args["connection_class"] = timed_connection_class(
            settings.request_statement_timeout
        )
    return _create_engine(
        settings.app_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_pre_ping=settings.database_pool_pre_ping,
        connect_args=connect_args,
    )


# Behind a transaction-pooling PgBouncer (before 1.21) consecutive transactions
# of one client connection may run on different server connections: keep no
# prepared statements across transactions, and give those made a unique name.
_TRANSACTION_POOLER_ARGS: dict[str, Any] = {
    "statement_cache_size": 0,
    "prepared_statement_cache_size": 0,
    "prepared_statement_name_func": lambda: f"__asyncpg_{uuid.uuid4()}__",
}


def migration_server_settings(settings: Settings) -> dict[str, str]:
    """Session settings of the migration connection.

    lock_timeout keeps a revision from queueing behind (and in front of) live
    traffic; the keepalives let the server notice a vanished migrator and free
    its advisory lock in about a minute instead of two hours;
    client_connection_check_interval (PostgreSQL 14+) makes the server notice a
    killed migrator during a long statement, instead of at its end.
    """
    idle = settings.migration_keepalive_idle
    return {
        "application_name": application_name("migrator"),
        "lock_timeout": f"{round(settings.migration_lock_timeout * 1000)}ms",
        "statement_timeout": f"{round(settings.migration_statement_timeout * 1000)}ms",
        "tcp_keepalives_idle": str(idle),
        "tcp_keepalives_interval": str(max(1, idle // 2)),
        "tcp_keepalives_count": "3",
        "tcp_user_timeout": str(idle * 3 * 1000),
        "client_connection_check_interval": "1000",
    }


def create_migration_engine(settings: Settings) -> AsyncEngine:
    """An engine that opens a fresh connection each time and pools nothing."""
    return _create_engine(
        settings.migration_url,
        poolclass=NullPool,
        connect_args=_connect_args(settings, migration_server_settings(settings)),
    )


def _create_engine(url: URL, **options: Any) -> AsyncEngine:
    # hide_parameters keeps statement parameters (which may be secrets) out of
    # exception messages.
    return create_async_engine(url, hide_parameters=True, **options)
