"""What an application's alembic/env.py runs, for every way Alembic is run:

    from alembic import context
    from alembic_lockstep.environment import run_migrations

    run_migrations(context, target_metadata=Base.metadata, app_version="1.2.0",
                   command_line_config=lambda: MigrationConfig(...))

- inside the bootstrap, which already holds the advisory lock and passes its
  connection in `config.attributes["connection"]` (Alembic's "connection
  sharing" recipe): nothing may call `asyncio.run()` (the event loop is
  running) or `fileConfig()` (it would disable the application's loggers);
- offline (`--sql`, and `db lint`, which renders each revision without a
  database);
- from the `alembic` command line: a connection to the migration URL of
  `command_line_config()`, holding the same lock as the bootstrap.

Every revision runs in its own transaction; before it commits, its session is
checked to be the one holding the lock, and the audit trail gets its row.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from logging.config import fileConfig
from typing import TYPE_CHECKING, Any

from sqlalchemy import MetaData
from sqlalchemy.engine import Connection

from alembic_lockstep import lock
from alembic_lockstep.alembic_cli import run_locked
from alembic_lockstep.audit import RUNNER_COMMAND_LINE, AuditWriter, offline_row_sql
from alembic_lockstep.config import MigrationConfig

if TYPE_CHECKING:
    from alembic.runtime.migration import MigrationInfo


def run_migrations(
    context: Any,
    *,
    target_metadata: MetaData,
    app_version: str,
    command_line_config: Callable[[], MigrationConfig],
    **configure_options: Any,
) -> None:
    """Run Alembic's migrations for `context` (env.py's `alembic.context`);
    `configure_options` go to `context.configure` (compare_type, ...)."""
    config = context.config
    _configure_logging(config)
    if _drafting_by_hand(config):
        _run_draft(context, target_metadata, configure_options)
        return
    if context.is_offline_mode():
        _run_offline(context, target_metadata, app_version)
        return
    audit = AuditWriter(
        runner=config.attributes.get("runner", RUNNER_COMMAND_LINE),
        app_version=app_version,
        waiting=config.attributes.get("audit_pending", []),
    )

    def on_version_apply(**arguments: Any) -> None:
        # Before the step commits: its session is the one that holds the lock.
        lock.check_session(arguments["ctx"].connection)
        audit.on_version_apply(**arguments)
        callback = config.attributes.get("on_version_apply")
        if callback is not None:
            callback(arguments["step"])

    def configure_and_run(connection: Connection) -> None:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            transaction_per_migration=True,
            on_version_apply=on_version_apply,
            **configure_options,
        )
        with context.begin_transaction():
            audit.restart_clock()
            context.run_migrations()

    shared = config.attributes.get("connection")
    if shared is not None:
        configure_and_run(shared)
    else:
        asyncio.run(run_locked(command_line_config(), configure_and_run))


def _run_offline(context: Any, target_metadata: MetaData, app_version: str) -> None:
    """Render SQL (needs only the dialect, no database); each revision's
    transaction writes its audit row, as an online run does (audit.py)."""

    def on_version_apply(*, ctx: Any, step: MigrationInfo, **_: Any) -> None:
        if step.is_migration:
            sql = offline_row_sql(step, app_version, ctx.dialect)
            ctx.impl.static_output(sql + ctx.impl.command_terminator)

    context.configure(
        dialect_name="postgresql",
        target_metadata=target_metadata,
        literal_binds=True,
        transaction_per_migration=True,
        on_version_apply=on_version_apply,
    )
    with context.begin_transaction():
        context.run_migrations()


def _drafting_by_hand(config: Any) -> bool:
    """`alembic revision` without --autogenerate: env.py runs (alembic.ini's
    `revision_environment`) only for `process_revision_directives`, which
    numbers the draft; no database is needed."""
    return getattr(config.cmd_opts, "autogenerate", None) is False


def _run_draft(context: Any, target_metadata: MetaData, configure_options: dict[str, Any]) -> None:
    # As SQL, to a buffer nobody reads: the draft's hooks run without a connection.
    context.configure(
        dialect_name="postgresql",
        target_metadata=target_metadata,
        as_sql=True,
        output_buffer=io.StringIO(),
        **configure_options,
    )
    with context.begin_transaction():
        context.run_migrations()


def _configure_logging(config: Any) -> None:
    """The `alembic` command line configures its logging from alembic.ini; the
    bootstrap and `db lint` (which renders offline without a connection) keep
    the application's."""
    command_line = "connection" not in config.attributes
    wanted = config.attributes.get("configure_logging", command_line)
    if wanted and config.config_file_name and config.file_config.has_section("formatters"):
        fileConfig(config.config_file_name, disable_existing_loggers=False)
