"""The one-off migrator and the database commands: `migrate`, `db status`,
`db history`, `db verify`, `db heads` (cli.py puts them on a command line)."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from alembic_lockstep import holds, lock
from alembic_lockstep.audit import history_query
from alembic_lockstep.bootstrap import Bootstrap, MigrationFailed
from alembic_lockstep.config import MigrationConfig
from alembic_lockstep.connections import create_reads_engine
from alembic_lockstep.heads import manifest_path, read_heads, write_manifest
from alembic_lockstep.scripts import current_revisions, load_revisions
from alembic_lockstep.verify import audit_trail_exists, verify_checksums


async def migrate(
    config: MigrationConfig,
    give_up_after: float | None,
    *,
    resume: tuple[str | None, str] | None = None,
) -> int:
    """Bring the schema to head under the lock; 0 at head, 1 on failure or timeout.
    `resume` (operator or None for the OS user, reason): lift the holds on
    cancelled revisions first, recording who and why (holds.py).

    Every read goes through the migration URL: a Job with the owner's role
    needs nothing of the application's. `give_up_after` bounds the wait for the
    database, the lock and the migration, not the checks of a schema at head.
    """
    engine = create_reads_engine(config)
    bootstrap = Bootstrap(config, engine)
    try:
        if resume is not None:
            await _lift_holds(engine, *resume)
        await bootstrap.migrate(give_up_after)
    except MigrationFailed:
        return 1
    except TimeoutError:
        status = json.dumps(bootstrap.status.as_json())
        print(f"gave up after {give_up_after}s: {status}", file=sys.stderr)
        return 1
    finally:
        await engine.dispose()
    print(f"schema at head {','.join(bootstrap.status.target_revision)}")
    return 0


async def _lift_holds(engine: AsyncEngine, operator: str | None, reason: str) -> None:
    async with engine.connect() as connection:
        lifted = await holds.lift_holds(connection, operator or holds.default_operator(), reason)
    for hold in lifted:
        print(
            f"lifted the hold on {hold.revision} (held since {hold.held_at.isoformat()} "
            f"by {hold.held_by}: {hold.reason})"
        )
    if not lifted:
        print("no hold to lift")


def heads_manifest(alembic_config: Path, *, write: bool, write_command: str) -> int:
    """Compare (or rewrite) the heads manifest with the heads the scripts have."""
    heads = load_revisions(alembic_config).heads
    if write:
        print(f"wrote {write_manifest(alembic_config, heads)}: {', '.join(heads)}")
        return 0
    if read_heads(alembic_config) != heads:
        print(
            f"{manifest_path(alembic_config)} is out of date (heads {', '.join(heads)}); "
            f"run `{write_command}`"
        )
        return 1
    print(f"heads manifest up to date: {', '.join(heads)}")
    return 0


async def database_status(config: MigrationConfig, engine: AsyncEngine, *, as_json: bool) -> int:
    """Print the database's revision, the code's heads, what is pending, who holds
    the lock and the last applied steps."""
    revisions = await asyncio.to_thread(load_revisions, config.alembic_config)
    async with engine.connect() as connection:
        current = await current_revisions(connection)
        holder = await lock.find_holder(connection, lock.MigrationLock.of(config))
        last_steps = await _history(connection, 5)
        held = await holds.active_holds(connection)
    unknown = [revision for revision in current if not revisions.is_known(revision)]
    report: dict[str, Any] = {
        "current_revision": list(current),
        "heads": list(revisions.heads),
        "at_head": current == revisions.heads,
        "pending": [] if unknown else revisions.pending(current),
        "unknown_revisions": unknown,
        "lock_holder": holder.as_json() if holder else None,
        "holds": [hold.as_json() for hold in held],
        "last_applied": last_steps,
    }
    print(json.dumps(report, indent=2) if as_json else _as_text(report))
    return 0


async def database_history(engine: AsyncEngine, *, as_json: bool, limit: int) -> int:
    """Print the audit trail, newest first."""
    async with engine.connect() as connection:
        steps = await _history(connection, limit)
    if as_json:
        print(json.dumps(steps, indent=2))
    else:
        print("\n".join(_step_line(step) for step in steps) or "(no audit trail yet)")
    return 0


async def database_verify(config: MigrationConfig, engine: AsyncEngine, *, as_json: bool) -> int:
    """Compare applied revisions with the checksums recorded when they ran; 1 if any was edited."""
    revisions = await asyncio.to_thread(load_revisions, config.alembic_config)
    async with engine.connect() as connection:
        current = await current_revisions(connection)
        applied = revisions.applied([r for r in current if revisions.is_known(r)])
        result = await verify_checksums(connection, revisions, applied)
    if as_json:
        report = {
            "ok": result.ok,
            "checked": result.checked,
            "unrecorded": result.unrecorded,
            "edited": [vars(entry) for entry in result.edited],
            "edited_on_the_record": [vars(entry) for entry in result.accepted],
        }
        print(json.dumps(report, indent=2))
    else:
        print(result.describe())
        for entry in result.edited:
            print(f"  {entry.revision}: recorded {entry.recorded}, file now {entry.current}")
        for accepted in result.accepted:
            print(
                f"  {accepted.revision}: recorded {accepted.recorded}, file now {accepted.current}, "
                f"accepted on the record: {'; '.join(accepted.reasons)}"
            )
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
        f"(version {step['app_version']}, checksum {str(step['checksum'])[:12]})"
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
    for hold in report["holds"]:
        lines.append(
            f"held:             {hold['revision']} since {hold['since']} by {hold['held_by']} "
            f"({hold['reason']}); lift with migrate --resume --reason TEXT"
        )
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
