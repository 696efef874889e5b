"""The bootstrap's own configuration: typed, validated, built by the application.

The bootstrap reads no environment and no application settings: the
application builds a `MigrationConfig` (from its own settings object) and
hands it to `Bootstrap`, the commands, and the `alembic` command line's locked
connection. Only `python -m alembic_lockstep` builds one from the environment
when it is given no settings (__main__.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL


class Verify(StrEnum):
    """What to do about applied revisions whose files changed after they ran."""

    OFF = "off"
    # Log each edited revision, and serve.
    WARN = "warn"
    # Refuse readiness: the process fails (`edited_revision`).
    STRICT = "strict"


class LogFormat(StrEnum):
    """How the bootstrap's progress lines look when the application has set up
    no logging of its own for them (logs.py); an application that did keeps
    its format."""

    TEXT = "text"
    JSON = "json"
    # Leave the loggers alone: only warnings and errors reach stderr, unformatted.
    OFF = "off"


@dataclass(frozen=True)
class MigrationConfig:
    """Everything the bootstrap needs; durations are in seconds.

    `migration_url` must reach PostgreSQL directly (never through a
    transaction-pooling pooler): the lock and the DDL run on one server
    session. `connect_args` go to asyncpg for every migration connection (TLS:
    `ssl`); the URL then carries no libpq-only query parameters.
    """

    migration_url: URL
    alembic_config: Path
    # Processes that share a lock name serialise; the lock key is derived from it.
    lock_name: str = "schema-migrations"
    # Sessions are named "<application_name> migrator <host> pid=<pid>" in
    # pg_stat_activity: migrators of any lock name recognise each other by it.
    application_name: str = "fastapi-app"
    # False: wait (unready) until another process brought the schema to head.
    migrate_on_startup: bool = True
    # The longest lock_timeout of a revision's attempt (the first waits 0.1 s,
    # each retry twice as long), and how often a revision is retried after it.
    lock_timeout: float = 0.5
    lock_retries: int = 20
    # statement_timeout of migration statements (0: none).
    statement_timeout: float = 3600.0
    # The failure policy: exit the process (status 3 under uvicorn's supervisor,
    # 4 otherwise) after a failed migration, or keep serving, unready.
    exit_on_failure: bool = True
    verify: Verify = Verify.WARN
    # The progress lines (waiting for the lock, each revision, ready, failed)
    # on stderr when the application configured no logging for them.
    log_format: LogFormat = LogFormat.TEXT
    # Serve a database ahead of this code on the same line (a rolled-back deploy).
    allow_schema_ahead: bool = True
    # Seconds of silence before the server probes the migration connection.
    keepalive_idle: int = 20
    connect_timeout: float = 10.0
    # The longest pause between attempts to reach the database.
    retry_max_interval: float = 10.0
    # How often a waiting or ready process reads the database's revision.
    poll_interval: float = 2.0
    connect_args: Mapping[str, Any] = field(default_factory=dict)
    # How the application names these fields for its operators (its environment
    # variables, say {"statement_timeout": "MIGRATION_STATEMENT_TIMEOUT"}), so
    # that an error names what to change; a field not named here goes by its own.
    setting_names: Mapping[str, str] = field(default_factory=dict)
    # The command that rewrites the heads manifest, named by a stale-manifest error.
    write_heads_command: str = "db heads --write"
    # The command that lifts a hold on a cancelled revision, named by /readyz.
    resume_command: str = "migrate --resume --reason TEXT"

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise ValueError(f"invalid migration configuration: {'; '.join(problems)}")

    def named(self, field_name: str) -> str:
        """How the application's operators know the field `field_name`."""
        return self.setting_names.get(field_name, field_name)

    @property
    def migrator_name(self) -> str:
        """The application_name prefix of every migrator session of this application."""
        return f"{self.application_name} migrator"


def _problems(config: MigrationConfig) -> list[str]:
    found = []
    if not config.lock_name:
        found.append("lock_name is empty")
    if not config.application_name or not config.application_name.isprintable():
        found.append("application_name must be printable and not empty")
    if not config.migration_url.database:
        found.append("migration_url names no database")
    durations = {
        "lock_timeout": config.lock_timeout,
        "connect_timeout": config.connect_timeout,
        "retry_max_interval": config.retry_max_interval,
        "poll_interval": config.poll_interval,
    }
    found += [
        f"{name} must be a finite number above 0"
        for name, value in durations.items()
        if not (math.isfinite(value) and value > 0)
    ]
    if not (math.isfinite(config.statement_timeout) and config.statement_timeout >= 0):
        found.append("statement_timeout must be a finite number, 0 or above")
    if config.lock_retries < 0:
        found.append("lock_retries must be 0 or above")
    if config.keepalive_idle < 1:
        found.append("keepalive_idle must be 1 or above")
    if not isinstance(config.verify, Verify):
        found.append(f"verify must be one of {', '.join(Verify)}")
    if not isinstance(config.log_format, LogFormat):
        found.append(f"log_format must be one of {', '.join(LogFormat)}")
    unknown = set(config.setting_names) - {field.name for field in fields(MigrationConfig)}
    if unknown:
        found.append(f"setting_names names no field: {', '.join(sorted(unknown))}")
    return found
