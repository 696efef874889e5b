"""The `migrate` and `db status` commands."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from service import lock
from service.bootstrap import Bootstrap, MigrationFailed
from service.database import create_app_engine
from service.logs import configure_logging
from service.migrations import current_revisions, load_revisions
from service.status import MigrationStatus
from settings import Settings


async def migrate(settings: Settings, give_up_after: float | None) -> int:
    """Bring the schema to head under the lock; 0 at head, 1 on failure or timeout."""
    configure_logging(settings.log_level)
    engine = create_app_engine(settings)
    status = MigrationStatus()
    try:
        await asyncio.wait_for(Bootstrap(settings, engine, status).run(migrate=True), give_up_after)
    except MigrationFailed:
        return 1
    except TimeoutError:
        print(f"gave up after {give_up_after}s: {json.dumps(status.as_json())}", file=sys.stderr)
        return 1
    finally:
        await engine.dispose()
    print(f"schema at head {','.join(status.target_revision)}")
    return 0


async def database_status(settings: Settings, *, as_json: bool) -> int:
    """Print the database's revision, the code's heads, what is pending and who holds the lock."""
    revisions = await asyncio.to_thread(load_revisions, settings.alembic_config)
    engine = create_app_engine(settings)
    try:
        async with engine.connect() as connection:
            current = await current_revisions(connection)
            holder = await lock.find_holder(connection, lock.lock_key(settings.migration_lock_name))
    finally:
        await engine.dispose()
    unknown = [revision for revision in current if not revisions.is_known(revision)]
    report: dict[str, Any] = {
        "current_revision": list(current),
        "heads": list(revisions.heads),
        "at_head": current == revisions.heads,
        "pending": [] if unknown else revisions.pending(current),
        "unknown_revisions": unknown,
        "lock_holder": holder.as_json() if holder else None,
    }
    print(json.dumps(report, indent=2) if as_json else _as_text(report))
    return 0


def _as_text(report: dict[str, Any]) -> str:
    holder = report["lock_holder"]
    lines = [
        f"current revision: {', '.join(report['current_revision']) or '(none)'}",
        f"heads:            {', '.join(report['heads'])}",
        f"at head:          {'yes' if report['at_head'] else 'no'}",
        f"pending:          {', '.join(report['pending']) or '(none)'}",
    ]
    if report["unknown_revisions"]:
        lines.append(f"unknown to this code: {', '.join(report['unknown_revisions'])}")
    if holder:
        lines.append(
            f"lock holder:      pid {holder['pid']} {holder['application_name']} "
            f"from {holder['client_addr'] or 'local socket'} since {holder['since']}"
        )
    else:
        lines.append("lock holder:      (none)")
    return "\n".join(lines)
