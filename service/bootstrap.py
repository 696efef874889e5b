"""This service's migration bootstrap: the migrations package, configured from
Settings, with the service's own startup check (its pools against the
server's connections)."""

from __future__ import annotations

from alembic_lockstep import Bootstrap, MigrationConfig, MigrationStatus, Verify
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.db.connection_budget import warn_if_over_budget
from service.db.engines import APPLICATION
from service.db.tls import tls_options
from settings import Settings

# How the operators of this service know the bootstrap's settings.
SETTING_NAMES = {
    "migration_url": "MIGRATION_DATABASE_URL",
    "lock_name": "MIGRATION_LOCK_NAME",
    "migrate_on_startup": "MIGRATE_ON_STARTUP",
    "lock_timeout": "MIGRATION_LOCK_TIMEOUT",
    "lock_retries": "MIGRATION_LOCK_RETRIES",
    "statement_timeout": "MIGRATION_STATEMENT_TIMEOUT",
    "exit_on_failure": "MIGRATION_EXIT_ON_FAILURE",
    "verify": "MIGRATION_VERIFY",
    "allow_schema_ahead": "ALLOW_SCHEMA_AHEAD",
    "keepalive_idle": "MIGRATION_KEEPALIVE_IDLE",
    "connect_timeout": "DATABASE_CONNECT_TIMEOUT",
    "retry_max_interval": "DATABASE_RETRY_MAX_INTERVAL",
    "poll_interval": "READINESS_POLL_INTERVAL",
    "alembic_config": "ALEMBIC_CONFIG",
}


def migration_config(settings: Settings) -> MigrationConfig:
    """The bootstrap's configuration from the service's settings."""
    url, tls = tls_options(settings.migration_url)
    return MigrationConfig(
        migration_url=url,
        connect_args=tls,
        alembic_config=settings.alembic_config,
        lock_name=settings.migration_lock_name,
        application_name=APPLICATION,
        migrate_on_startup=settings.migrate_on_startup,
        lock_timeout=settings.migration_lock_timeout,
        lock_retries=settings.migration_lock_retries,
        statement_timeout=settings.migration_statement_timeout,
        exit_on_failure=settings.migration_exit_on_failure,
        verify=Verify(settings.migration_verify),
        allow_schema_ahead=settings.allow_schema_ahead,
        keepalive_idle=settings.migration_keepalive_idle,
        connect_timeout=settings.database_connect_timeout,
        retry_max_interval=settings.database_retry_max_interval,
        poll_interval=settings.readiness_poll_interval,
        setting_names=SETTING_NAMES,
        write_heads_command="python -m service db heads --write",
        resume_command="python -m service migrate --resume --reason TEXT",
    )


def create_bootstrap(settings: Settings, engine: AsyncEngine, status: MigrationStatus) -> Bootstrap:
    """The bootstrap of a serving process on the application's engine; a process
    that will exit after a failed migration keeps the lock until it exits."""

    async def check_connection_budget(connection: AsyncConnection) -> None:
        await warn_if_over_budget(connection, settings)

    return Bootstrap(
        migration_config(settings),
        engine,
        status=status,
        startup_check=check_connection_budget,
        hold_lock_after_failure=settings.migration_exit_on_failure,
    )
