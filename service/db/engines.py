"""The application's pooled engine, for requests and readiness checks.

It runs on DATABASE_URL, which may point at a pooler. The migrator's own
connections (a dedicated, unpooled session on the direct MIGRATION_DATABASE_URL)
belong to the bootstrap: alembic_lockstep/connections.py.
"""

from __future__ import annotations

from typing import Any

from alembic_lockstep import NO_PREPARED_STATEMENT_CACHE, session_name
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from service.db.json_values import loads
from service.db.statement_timeout import milliseconds, timed_connection_class
from service.db.tls import tls_options
from settings import Settings

# How this service's sessions name themselves in pg_stat_activity ("<this> app
# <host> pid=<pid>"; the migrator's "<this> migrator ...").
APPLICATION = "platform-service"
# Seconds the client waits for a statement beyond REQUEST_STATEMENT_TIMEOUT.
CLIENT_GRACE = 2.0


def application_name(role: str) -> str:
    """Name a session of this service after what it does and where it runs."""
    return session_name(APPLICATION, role)


def create_app_engine(settings: Settings) -> AsyncEngine:
    """The pooled engine for requests' transactions and readiness checks (the
    statements that commit on their own have a pool of their own when the
    settings give it connections: service/db/statement_pool.py)."""
    url, arguments = session_arguments(settings)
    # Behind a transaction-pooling pooler no prepared statement may outlive its
    # transaction (see NO_PREPARED_STATEMENT_CACHE).
    if settings.database_pooler == "transaction":
        arguments.update(NO_PREPARED_STATEMENT_CACHE)
    # hide_parameters keeps statement parameters (which may be secrets) out of
    # exception messages.
    return create_async_engine(
        url,
        hide_parameters=True,
        pool_size=settings.transaction_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_pre_ping=settings.database_pool_pre_ping,
        connect_args=arguments,
        json_deserializer=loads,
    )


def session_arguments(settings: Settings) -> tuple[URL, dict[str, Any]]:
    """DATABASE_URL without its TLS parameters, and asyncpg's `connect()`
    arguments for an application session: the same for both pools."""
    url, tls = tls_options(settings.app_url)
    arguments: dict[str, Any] = {
        "timeout": settings.database_connect_timeout,
        "server_settings": {"application_name": application_name("app")},
        **tls,
    }
    if settings.database_pooler == "transaction":
        arguments["statement_cache_size"] = 0
    if settings.request_statement_timeout > 0:
        if settings.database_pooler == "none":
            # Every session's own, for the reads outside a transaction (a pooler
            # passes no startup parameter on: service/db/statement_timeout.py).
            arguments["server_settings"]["statement_timeout"] = (
                f"{milliseconds(settings.request_statement_timeout)}ms"
            )
        arguments["connection_class"] = timed_connection_class(settings.request_statement_timeout)
        # The server's timeout cannot end a statement that never reaches it (a
        # paused or stalled pooler, a network path that drops packets): the
        # client gives up a little after it (TimeoutError, answered 503).
        arguments["command_timeout"] = settings.request_statement_timeout + CLIENT_GRACE
    return url, arguments
