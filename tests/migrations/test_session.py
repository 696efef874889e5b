"""The migration session's own settings, as the server sees them."""

from __future__ import annotations

import os

from alembic_lockstep.connections import create_migration_engine
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from service.bootstrap import migration_config
from service.db.engines import create_app_engine
from tests.support.configs import settings_for


async def test_migration_session_is_unpooled_bounded_and_kept_alive(empty_database: URL) -> None:
    settings = settings_for(
        empty_database,
        migration_lock_timeout=3,
        migration_statement_timeout=600,
        migration_keepalive_idle=20,
    )
    engine = create_migration_engine(migration_config(settings))
    assert isinstance(engine.pool, NullPool)
    async with engine.connect() as connection:
        shown = {
            name: await connection.scalar(text(f"SHOW {name}"))
            for name in (
                "application_name",
                "lock_timeout",
                "statement_timeout",
                "tcp_keepalives_idle",
                "tcp_keepalives_interval",
                "tcp_keepalives_count",
                "tcp_user_timeout",
                "client_connection_check_interval",
            )
        }
    await engine.dispose()
    assert shown["application_name"].startswith("platform-service migrator")
    assert f"pid={os.getpid()}" in shown["application_name"]
    # The first attempt's lock_timeout; each retry doubles it up to MIGRATION_LOCK_TIMEOUT.
    assert shown["lock_timeout"] == "100ms"
    assert shown["statement_timeout"] == "10min"
    # About a minute from a silent peer to a reaped session (and a freed lock).
    assert shown["tcp_keepalives_idle"] == "20"
    assert shown["tcp_keepalives_interval"] == "10"
    assert shown["tcp_keepalives_count"] == "3"
    assert shown["tcp_user_timeout"] == "60000"  # milliseconds
    assert shown["client_connection_check_interval"] == "1s"


async def test_application_sessions_have_no_migration_limits(empty_database: URL) -> None:
    engine = create_app_engine(settings_for(empty_database))
    async with engine.connect() as connection:
        name = await connection.scalar(text("SHOW application_name"))
        lock_timeout = await connection.scalar(text("SHOW lock_timeout"))
    await engine.dispose()
    assert name.startswith("platform-service app")
    assert lock_timeout == "0"
