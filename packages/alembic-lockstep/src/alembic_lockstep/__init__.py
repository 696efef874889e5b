"""alembic-lockstep: every replica of a FastAPI app migrates its PostgreSQL
schema on startup with Alembic, exactly once across the fleet, under a
PostgreSQL session advisory lock, while readiness reports what it is doing.

Everything an application may use is named in `__all__` (the README of the
distribution describes each); the modules behind it are the library's own and
may change between versions.

The names are imported when first used (PEP 562), so that a command that needs
only a part of the package (`heads`, `lint`, an env.py rendering SQL) does not
pay for FastAPI's and the async engine's imports, and so that the runner's
uvicorn (an optional extra) is imported only by the runner.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from alembic_lockstep.acceptances import (
        AcceptanceFileError,
        default_path,
        load_acceptances,
    )
    from alembic_lockstep.audit import checksum_of_file, define_audit_table
    from alembic_lockstep.bootstrap import Bootstrap, MigrationFailed
    from alembic_lockstep.cli import (
        add_commands,
        is_migration_command,
        needs_database,
        run,
        run_offline,
    )
    from alembic_lockstep.config import LogFormat, MigrationConfig, Verify
    from alembic_lockstep.connections import NO_PREPARED_STATEMENT_CACHE, session_name
    from alembic_lockstep.edits import EditRecordError, RecordedEdits, load_edits
    from alembic_lockstep.environment import run_migrations
    from alembic_lockstep.errors import describe_error, failure_kind, is_unreachable, sqlstate
    from alembic_lockstep.exits import EXIT_MIGRATION_FAILED
    from alembic_lockstep.heads import write_manifest
    from alembic_lockstep.holds import define_holds_table
    from alembic_lockstep.numbering import number_drafts
    from alembic_lockstep.runner import die_with_supervisor, supervise
    from alembic_lockstep.scripts import load_revisions
    from alembic_lockstep.serving import BootstrapState, readiness_router, run_in_background
    from alembic_lockstep.status import MigrationStatus, Phase

_HOMES = {
    # The bootstrap in an app.
    "Bootstrap": "bootstrap",
    "BootstrapState": "serving",
    "LogFormat": "config",
    "MigrationConfig": "config",
    "MigrationFailed": "bootstrap",
    "MigrationStatus": "status",
    "Phase": "status",
    "Verify": "config",
    "readiness_router": "serving",
    "run_in_background": "serving",
    # The app's models and alembic/env.py.
    "define_audit_table": "audit",
    "define_holds_table": "holds",
    "number_drafts": "numbering",
    "run_migrations": "environment",
    # The app's own command line (python -m alembic_lockstep has them all).
    "add_commands": "cli",
    "is_migration_command": "cli",
    "needs_database": "cli",
    "run": "cli",
    "run_offline": "cli",
    # The runner (the `runner` extra: uvicorn).
    "EXIT_MIGRATION_FAILED": "exits",
    "die_with_supervisor": "runner",
    "supervise": "runner",
    # Classifying database errors the way the bootstrap does.
    "describe_error": "errors",
    "failure_kind": "errors",
    "is_unreachable": "errors",
    "sqlstate": "errors",
    # Sessions named and configured as the bootstrap's are.
    "NO_PREPARED_STATEMENT_CACHE": "connections",
    "session_name": "connections",
    # Release checks: the revision scripts, their checksums and the records beside them.
    "AcceptanceFileError": "acceptances",
    "EditRecordError": "edits",
    "RecordedEdits": "edits",
    "checksum_of_file": "audit",
    "default_path": "acceptances",
    "load_acceptances": "acceptances",
    "load_edits": "edits",
    "load_revisions": "scripts",
    "write_manifest": "heads",
}
__all__ = [
    "EXIT_MIGRATION_FAILED",
    "NO_PREPARED_STATEMENT_CACHE",
    "AcceptanceFileError",
    "Bootstrap",
    "BootstrapState",
    "EditRecordError",
    "LogFormat",
    "MigrationConfig",
    "MigrationFailed",
    "MigrationStatus",
    "Phase",
    "RecordedEdits",
    "Verify",
    "add_commands",
    "checksum_of_file",
    "default_path",
    "define_audit_table",
    "define_holds_table",
    "describe_error",
    "die_with_supervisor",
    "failure_kind",
    "is_migration_command",
    "is_unreachable",
    "load_acceptances",
    "load_edits",
    "load_revisions",
    "needs_database",
    "number_drafts",
    "readiness_router",
    "run",
    "run_in_background",
    "run_migrations",
    "run_offline",
    "session_name",
    "sqlstate",
    "supervise",
    "write_manifest",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
