"""Alembic environment of this service: the migrations package runs it.

The bootstrap passes its locked connection; the `alembic` command line connects
to MIGRATION_DATABASE_URL (or DATABASE_URL) and takes the same advisory lock;
offline mode renders SQL (`db lint`). See service/migrations/environment.py.
"""

from __future__ import annotations

from alembic import context
from service import __version__
from service.migrations import MigrationConfig
from service.migrations.environment import run_migrations
from service.models import Base


def _command_line_config() -> MigrationConfig:
    # Read only when the command line runs: the bootstrap and `db lint` need no settings.
    from service.bootstrap import migration_config
    from settings import load_settings

    return migration_config(load_settings())


run_migrations(
    context,
    target_metadata=Base.metadata,
    app_version=__version__,
    command_line_config=_command_line_config,
    compare_type=True,
    compare_server_default=True,
)
