"""Alembic environment of this service: the migrations package runs it.

The bootstrap passes its locked connection; the `alembic` command line connects
to MIGRATION_DATABASE_URL (or DATABASE_URL) and takes the same advisory lock;
offline mode renders SQL (`db lint`). See alembic_lockstep/environment.py.
"""

from __future__ import annotations

import os

from alembic_lockstep import MigrationConfig, number_drafts, run_migrations

from alembic import context
from service import __version__
from service.models import Base


def _command_line_config() -> MigrationConfig:
    # Read only when the command line runs: the bootstrap and `db lint` need no settings.
    from service.bootstrap import migration_config
    from service.db.embedded import command_line_database_url
    from settings import SettingsError, load_settings

    try:
        settings = load_settings()
        if settings.database_url is None:
            # Beside `python -m service` on the embedded PostgreSQL: its server.
            os.environ["DATABASE_URL"] = command_line_database_url("alembic")
            settings = load_settings()
    except SettingsError as error:
        raise SystemExit(f"error: {error}") from None
    return migration_config(settings)


run_migrations(
    context,
    target_metadata=Base.metadata,
    app_version=__version__,
    command_line_config=_command_line_config,
    compare_type=True,
    compare_server_default=True,
    process_revision_directives=number_drafts,
)
