"""Does this process fit in the database's connections? Checked once at startup.

Each worker process keeps up to DATABASE_POOL_SIZE + DATABASE_MAX_OVERFLOW
connections for requests, and a migrating one two more for a moment (the
migration session and the second connection that proves it is real), and one
more, always, that listens for config events (service/api/sdk/event_hub.py,
direct to the server even behind a pooler: a pooler cannot carry LISTEN). The
server allows max_connections minus the slots it keeps for superusers (and,
from PostgreSQL 16, for roles with pg_use_reserved_connections). Behind a
transaction-pooling pooler the request pool counts against the pooler, not the
server, and only the migration and listening connections reach PostgreSQL.

The workers are counted as the supervisor that started them counts them, from
its command line, read with its own parser: `uvicorn --workers N` (and
UVICORN_WORKERS), `gunicorn -w N` (and GUNICORN_CMD_ARGS; not a config
file's `workers`); else WEB_CONCURRENCY, which `python -m service --workers N`
sets and both read by default.

Over budget, the fleet still migrates: until the schema is at head a worker
keeps no idle connection (the bootstrap closes its pool's idle connections
while behind head, and the listening connection opens once ready), so the
migrator's session is not starved by the fleet's own idle connections.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import os
import shlex
from collections.abc import Sequence
from pathlib import Path

import click
import uvicorn
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from settings import Settings

logger = logging.getLogger("service.db.connection_budget")

MIGRATION_CONNECTIONS = 2
EVENT_CONNECTIONS = 1
_SERVER_LIMITS = text(
    "SELECT current_setting('max_connections')::int AS max_connections,"
    " current_setting('superuser_reserved_connections')::int"
    " + coalesce(current_setting('reserved_connections', true)::int, 0) AS reserved"
)


def worker_count() -> int:
    """Worker processes of this server: the workers of the uvicorn or gunicorn
    command that started this worker, else WEB_CONCURRENCY, else 1."""
    command = _supervisor_command()
    for workers_of in (_uvicorn_workers, _gunicorn_workers):
        from_command = workers_of(command)
        if from_command is not None:
            return from_command
    raw = os.environ.get("WEB_CONCURRENCY", "")
    return int(raw) if raw.isascii() and raw.isdigit() and int(raw) > 0 else 1


def _supervisor_command() -> list[str]:
    """The command line of this process's parent: the supervisor that spawned
    it (uvicorn's) or forked it (gunicorn's arbiter); [] when unreadable."""
    parent = multiprocessing.parent_process()
    pid = parent.pid if parent is not None else os.getppid()
    with contextlib.suppress(OSError):
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return [os.fsdecode(part) for part in raw.split(b"\0") if part]
    return []


def _uvicorn_workers(command: Sequence[str]) -> int | None:
    """`--workers` of a uvicorn command line (`uvicorn ...`, `python -m uvicorn
    ...`), parsed by uvicorn's own command; None when it is not uvicorn's or
    names no workers."""
    arguments = _uvicorn_arguments(command)
    if arguments is None:
        return None
    try:
        context = uvicorn.main.make_context("uvicorn", arguments, resilient_parsing=True)
    except click.ClickException:
        return None
    workers = context.params.get("workers")
    return workers if isinstance(workers, int) and workers > 0 else None


def _gunicorn_workers(command: Sequence[str]) -> int | None:
    """`-w` of a gunicorn command line (and GUNICORN_CMD_ARGS, which it reads
    first), parsed by gunicorn's own parser; None when it is not gunicorn's
    or names no workers."""
    arguments = _program_arguments(command, "gunicorn")
    if arguments is None:
        return None
    from gunicorn.config import Config

    parser = Config().parser()
    parser.exit_on_error = False
    workers = None
    for given in (shlex.split(os.environ.get("GUNICORN_CMD_ARGS", "")), arguments):
        with contextlib.suppress(argparse.ArgumentError, SystemExit):
            parsed, _ = parser.parse_known_args(given)
            workers = parsed.workers if parsed.workers is not None else workers
    return workers if isinstance(workers, int) and workers > 0 else None


def _uvicorn_arguments(command: Sequence[str]) -> list[str] | None:
    return _program_arguments(command, "uvicorn")


def _program_arguments(command: Sequence[str], program: str) -> list[str] | None:
    """The arguments given to `program` in a command line (`program ...`,
    `python -m program ...`), None when the command runs something else."""
    for index, part in enumerate(command):
        if Path(part).name == program:
            return list(command[index + 1 :])
        if part == "-m":
            following = command[index + 1 : index + 2]
            return list(command[index + 2 :]) if following == [program] else None
    return None


def connections_needed(settings: Settings, workers: int) -> int:
    per_worker = MIGRATION_CONNECTIONS + EVENT_CONNECTIONS
    if settings.database_pooler == "none":
        per_worker += settings.database_pool_size + settings.database_max_overflow
    return per_worker * workers


async def warn_if_over_budget(connection: AsyncConnection, settings: Settings) -> None:
    """Log a warning when this process alone may open more connections than the
    server accepts from ordinary roles."""
    limits = (await connection.execute(_SERVER_LIMITS)).one()
    await connection.commit()
    allowed = limits.max_connections - limits.reserved
    workers = worker_count()
    needed = connections_needed(settings, workers)
    if needed > allowed:
        logger.warning(
            "this process may open %d connections (%d workers x (DATABASE_POOL_SIZE %d + "
            "DATABASE_MAX_OVERFLOW %d + %d for migrating + %d listening for config events)) "
            "but the server accepts %d "
            "(max_connections %d - %d reserved), for every replica together: lower the pool "
            "size or the workers, or put a pooler in front (see docs/operations/poolers.md, Sizing the pools); "
            "the migration still runs",
            needed,
            workers,
            settings.database_pool_size if settings.database_pooler == "none" else 0,
            settings.database_max_overflow if settings.database_pooler == "none" else 0,
            MIGRATION_CONNECTIONS,
            EVENT_CONNECTIONS,
            allowed,
            limits.max_connections,
            limits.reserved,
        )
