"""Engines and connections.

Application traffic uses a pooled engine on DATABASE_URL (which may point at a
pooler). The migrator uses one dedicated, unpooled connection on the direct
MIGRATION_DATABASE_URL: the advisory lock is tied to that one server session.
"""

from __future__ import annotations

import os
import socket
import ssl
import uuid
from typing import Any

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from service.db.statement_timeout import timed_connection_class
from service.migrations.retry import lock_timeout
from settings import Settings

# PostgreSQL truncates application_name to 63 bytes.
_APPLICATION_NAME_LENGTH = 63
_APPLICATION = "platform-service"
# How every migrator's session names itself: migrators recognise each other by it.
MIGRATOR_APPLICATION_NAME = f"{_APPLICATION} migrator"


def application_name(role: str) -> str:
    """Name a session after what it does and where it runs, for pg_stat_activity."""
    name = f"{_APPLICATION} {role} {socket.gethostname()} pid={os.getpid()}"
    if len(name) > _APPLICATION_NAME_LENGTH:
        name = f"{_APPLICATION} {role} pid={os.getpid()} {socket.gethostname()}"
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
# The migration connection always works this way: it runs few statements, and a
# migration URL that goes through such a pooler by mistake must still get as far
# as proving it (service/lock.py) instead of failing on a lost prepared statement.
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
        "lock_timeout": milliseconds(lock_timeout(0, settings.migration_lock_timeout)),
        "statement_timeout": milliseconds(settings.migration_statement_timeout),
        "tcp_keepalives_idle": str(idle),
        "tcp_keepalives_interval": str(max(1, idle // 2)),
        "tcp_keepalives_count": "3",
        "tcp_user_timeout": str(idle * 3 * 1000),
        "client_connection_check_interval": "1000",
    }


def milliseconds(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


def create_migration_engine(settings: Settings) -> AsyncEngine:
    """An engine that opens a fresh connection each time and pools nothing."""
    connect_args = _connect_args(settings, migration_server_settings(settings))
    connect_args.update(_TRANSACTION_POOLER_ARGS)
    return _create_engine(settings.migration_url, poolclass=NullPool, connect_args=connect_args)


def create_migration_reads_engine(settings: Settings) -> AsyncEngine:
    """A small pool on MIGRATION_DATABASE_URL for a migrator's own reads (the
    revision, the audit trail): `python -m service migrate` then needs no rights
    of the application's role."""
    connect_args = _connect_args(settings, {"application_name": application_name("migrator")})
    connect_args.update(_TRANSACTION_POOLER_ARGS)
    return _create_engine(
        settings.migration_url, pool_size=1, max_overflow=0, connect_args=connect_args
    )


def _create_engine(url: URL, **options: Any) -> AsyncEngine:
    url, tls = _tls_options(url)
    options["connect_args"] = {**options.get("connect_args", {}), **tls}
    # hide_parameters keeps statement parameters (which may be secrets) out of
    # exception messages.
    return create_async_engine(url, hide_parameters=True, **options)


def _tls_options(url: URL) -> tuple[URL, dict[str, Any]]:
    """libpq's `sslmode` and `sslrootcert` (checked by settings.py) as asyncpg's `ssl`.

    - disable, allow, prefer: as libpq does them (asyncpg knows these modes);
    - require: encrypted, the certificate is not checked (unless sslrootcert is
      given: then, as libpq does, it must be signed by that CA);
    - verify-ca: signed by sslrootcert's CA (or a CA the system trusts);
    - verify-full: verify-ca, and the certificate names the host of the URL.
    """
    mode = url.query.get("sslmode")
    root = url.query.get("sslrootcert")
    url = url.difference_update_query(["sslmode", "sslrootcert"])
    if not isinstance(mode, str):
        return url, {}
    if mode in {"disable", "allow", "prefer"}:
        return url, {"ssl": mode}
    context = ssl.create_default_context(cafile=root if isinstance(root, str) else None)
    context.check_hostname = mode == "verify-full"
    if mode == "require" and not isinstance(root, str):
        context.verify_mode = ssl.CERT_NONE
    return url, {"ssl": context}
