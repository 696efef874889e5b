"""Alembic environment for both ways of running migrations.

- Inside the service, the bootstrap already holds the advisory lock and passes
  its connection in `config.attributes["connection"]` (Alembic's "connection
  sharing" recipe); nothing here may call `asyncio.run()` (the event loop is
  running) or `fileConfig()` (it would disable the service's loggers).
- From the `alembic` command line, env.py connects to MIGRATION_DATABASE_URL (or
  DATABASE_URL) and takes the same advisory lock as the service, so a hand-run
  upgrade and a starting fleet never migrate at the same time.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig
from typing import Any

from sqlalchemy.engine import Connection

from alembic import context
from service.migrations import lock
from service.migrations.audit import RUNNER_COMMAND_LINE, AuditWriter
from service.models import Base

config = context.config
target_metadata = Base.metadata
# Every applied step leaves a row in schema_migration_audit, whoever runs it.
audit = AuditWriter(runner=config.attributes.get("runner", RUNNER_COMMAND_LINE))


def configure_and_run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        transaction_per_migration=True,
        compare_type=True,
        compare_server_default=True,
        on_version_apply=_on_version_apply,
    )
    with context.begin_transaction():
        audit.restart_clock()
        context.run_migrations()


def _on_version_apply(**arguments: Any) -> None:
    # Before the step commits: its session is the one that holds the lock.
    lock.check_session(arguments["ctx"].connection)
    audit.on_version_apply(**arguments)
    callback = config.attributes.get("on_version_apply")
    if callback is not None:
        callback(arguments["step"])


def run_offline() -> None:
    # Rendering SQL needs only the dialect, no database (`db lint` renders without one).
    context.configure(
        dialect_name="postgresql",
        target_metadata=target_metadata,
        literal_binds=True,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_from_command_line() -> None:
    from service.migrations.alembic_cli import run_locked

    asyncio.run(run_locked(configure_and_run))


# The `alembic` command line configures its logging from alembic.ini; the
# service and `db lint` (which render offline without a connection) keep theirs.
command_line = "connection" not in config.attributes
configure_logging = config.attributes.get("configure_logging", command_line)
if configure_logging and config.config_file_name and config.file_config.has_section("formatters"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

if context.is_offline_mode():
    run_offline()
elif (shared := config.attributes.get("connection")) is not None:
    configure_and_run(shared)
else:
    run_from_command_line()
