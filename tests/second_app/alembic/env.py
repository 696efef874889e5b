"""The notes app's Alembic environment: the migrations package runs it."""

from __future__ import annotations

from alembic_lockstep import run_migrations
from notes.app import migration_config
from notes.models import metadata

from alembic import context

run_migrations(
    context,
    target_metadata=metadata,
    app_version="notes-1.0",
    command_line_config=migration_config,
)
