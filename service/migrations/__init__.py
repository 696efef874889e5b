"""The migration bootstrap: every replica of a FastAPI app migrates on startup,
exactly once across the fleet, under a PostgreSQL session advisory lock, while
readiness reports what it is doing. This package imports nothing else of the
service; docs/bootstrap-library.md shows how.

The public surface:
- `MigrationConfig`: the typed configuration (URL, alembic.ini, lock name,
  timeouts, failure policy, verification, ...);
- `Bootstrap(config, engine)`: runs once per process; `status` says where it is;
- `run_in_background(bootstrap)`: in the lifespan, around its `yield`;
- `readiness_router()`: the readiness route, reading `BootstrapState` from
  the lifespan state;
- `MigrationStatus`, `Phase`: what readiness and metrics read;
- `define_audit_table(metadata)`: the audit trail's table in the app's models;
- `environment.run_migrations`: what the app's alembic/env.py runs;
- `cli`: the migrate and db commands for the app's command line.

The names are imported when first used (PEP 562), so that a command that needs
only a part of the package (`db heads`, `db lint`, an env.py rendering SQL)
does not pay for FastAPI's and the async engine's imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.migrations.audit import define_audit_table
    from service.migrations.bootstrap import Bootstrap, MigrationFailed
    from service.migrations.config import MigrationConfig, Verify
    from service.migrations.serving import BootstrapState, readiness_router, run_in_background
    from service.migrations.status import MigrationStatus, Phase

_HOMES = {
    "Bootstrap": "bootstrap",
    "BootstrapState": "serving",
    "MigrationConfig": "config",
    "MigrationFailed": "bootstrap",
    "MigrationStatus": "status",
    "Phase": "status",
    "Verify": "config",
    "define_audit_table": "audit",
    "readiness_router": "serving",
    "run_in_background": "serving",
}
__all__ = [
    "Bootstrap",
    "BootstrapState",
    "MigrationConfig",
    "MigrationFailed",
    "MigrationStatus",
    "Phase",
    "Verify",
    "define_audit_table",
    "readiness_router",
    "run_in_background",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
