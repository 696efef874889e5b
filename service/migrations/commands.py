"""The `migrate` and `db status` commands."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from service.db.engines import create_app_engine, create_migration_reads_engine
from service.migrations import lock
from service.migrations.audit import history_query
from service.migrations.bootstrap import Bootstrap, MigrationFailed
from service.migrations.scripts import current_revisions, load_revisions
from service.migrations.status import MigrationStatus
from service.migrations.verify import audit_trail_exists, verify_checksums
from service.observability.logs import configure_logging
from settings import Settings


async def migrate(settings: Settings, give_up_after: float | None) -> int:
    """Bring the schema to head under the lock; 0 at head, 1 on failure or timeout.

    Every read goes through MIGRATION_DATABASE_URL: a Job with the owner's role
    needs nothing of the application's. `give_up_after` bounds the wait for the
    database, the lock and the migration, not the checks of a schema at head.
    """
    configure_logging(settings.log_level, settings.log_format)
    engine = create_migration_reads_engine(settings)
    status = MigrationStatus()
    bootstrap = Bootstrap(settings, engine, status)
    try:
        from_manifest = await asyncio.wait_for(bootstrap.reach_head(migrate=True), give_up_after)
        await bootstrap.check_scripts(from_manifest)
    except MigrationFailed:
        return 1
    except TimeoutError:
        print(f"gave up after {give_up_after}s: {json.dumps(status.as_json())}", file=sys.stderr)
        return 1
    finally:
        await engine.dispose()
    bootstrap.mark_ready()
    print(f"schema at head {','.join(status.target_revision)}")
    return 0


def heads_manifest(settings: Settings, *, write: bool) -> int:
    """Compare (or rewrite) the heads manifest with the heads the scripts have."""
    from service.migrations.heads import manifest_path, read_heads, write_manifest

    heads = load_revisions(settings.alembic_config).heads
    if write:
        print(f"wrote {write_manifest(settings.alembic_config, heads)}: {', '.join(heads)}")
        return 0
    if read_heads(settings.alembic_config) != heads:
        print(
            f"{manifest_path(settings.alembic_config)} is out of date (heads {', '.join(heads)}); "
            "run `python -m service db heads --write`"
        )
        return 1
    print(f"heads manifest up to date: {', '.join(heads)}")
    return 0


async def database_status(settings: Settings, *, as_json: bool) -> int:
    """Print the database's revision, the code's heads, what is pending, who holds
    the lock and the last applied steps."""
    revisions = await asyncio.to_thread(load_revisions, settings.alembic_config)
    engine = create_app_engine(settings)
    try:
        async with engine.connect() as connection:
            current = await current_revisions(connection)
            holder = await lock.find_holder(connection, lock.lock_key(settings.migration_lock_name))
            last_steps = await _history(connection, 5)
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
        "last_applied": last_steps,
    }
    print(json.dumps(report, indent=2) if as_json else _as_text(report))
    return 0


async def database_history(settings: Settings, *, as_json: bool, limit: int) -> int:
    """Print the audit trail, newest first."""
    engine = create_app_engine(settings)
    try:
        async with engine.connect() as connection:
            steps = await _history(connection, limit)
    finally:
        await engine.dispose()
    if as_json:
        print(json.dumps(steps, indent=2))
    else:
        print("\n".join(_step_line(step) for step in steps) or "(no audit trail yet)")
    return 0


async def database_verify(settings: Settings, *, as_json: bool) -> int:
    """Compare applied revisions with the checksums recorded when they ran; 1 if any was edited."""
    revisions = await asyncio.to_thread(load_revisions, settings.alembic_config)
    engine = create_app_engine(settings)
    try:
        async with engine.connect() as connection:
            current = await current_revisions(connection)
            applied = revisions.applied([r for r in current if revisions.is_known(r)])
            result = await verify_checksums(connection, revisions, applied)
    finally:
        await engine.dispose()
    if as_json:
        report = {
            "ok": result.ok,
            "checked": result.checked,
            "unrecorded": result.unrecorded,
            "edited": [vars(entry) for entry in result.edited],
        }
        print(json.dumps(report, indent=2))
    else:
        print(result.describe())
        for entry in result.edited:
            print(f"  {entry.revision}: recorded {entry.recorded}, file now {entry.current}")
        if result.unrecorded:
            print(f"  applied before the audit trail existed: {', '.join(result.unrecorded)}")
    return 0 if result.ok else 1


async def _history(connection: AsyncConnection, limit: int) -> list[dict[str, Any]]:
    if not await audit_trail_exists(connection):
        return []
    rows = (await connection.execute(history_query(limit))).mappings().all()
    return [
        {
            key: value.isoformat() if isinstance(value, datetime) else value
            for key, value in row.items()
        }
        for row in rows
    ]


def _step_line(step: dict[str, Any]) -> str:
    arrow = "->" if step["direction"] == "upgrade" else "<-"
    parents = ",".join(step["down_revisions"]) or "base"
    return (
        f"{step['finished_at']}  {parents} {arrow} {step['revision']}  {step['duration_seconds']:.3f}s  "
        f"{step['runner']} on {step['host']} pid {step['pid']} as {step['database_user']} "
        f"(v{step['app_version']}, checksum {str(step['checksum'])[:12]})"
    )


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
    for step in report["last_applied"]:
        lines.append(f"applied:          {_step_line(step)}")
    if holder:
        lines.append(
            f"lock holder:      pid {holder['pid']} {holder['application_name']} "
            f"from {holder['client_addr'] or 'local socket'} since {holder['since']}"
        )
    else:
        lines.append("lock holder:      (none)")
    return "\n".join(lines)
