"""The revision scripts, and Alembic driven on the bootstrap's connection.

Everything here that touches Alembic's Python API is synchronous: the bootstrap
runs it through `AsyncConnection.run_sync` (database work) or a worker thread
(reading the revision scripts), so the event loop keeps serving probes.
Alembic is imported only when it is needed: a process whose database is at
head (alembic_lockstep/heads.py) never imports it before it is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from alembic_lockstep.audit import RUNNER_BOOTSTRAP
from alembic_lockstep.errors import sqlstate

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.runtime.migration import MigrationInfo
    from alembic.script import ScriptDirectory

StepCallback = Callable[["MigrationInfo"], None]
VERSION_TABLE = "alembic_version"
_UNDEFINED_TABLE = "42P01"


def alembic_config(path: Path, **attributes: Any) -> Config:
    """An Alembic Config for the application's alembic.ini, with extra attributes for env.py."""
    from alembic.config import Config

    config = Config(str(path))
    config.attributes.update(attributes)
    return config


@dataclass(frozen=True)
class Revisions:
    """What the code knows: the revision scripts and their heads."""

    script: ScriptDirectory

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(sorted(self.script.get_heads()))

    def is_known(self, revision: str) -> bool:
        from alembic.util.exc import CommandError

        try:
            return self.script.get_revision(revision) is not None
        except CommandError:
            return False

    def applied(self, current: Sequence[str]) -> list[str]:
        """The known revisions a database at `current` has applied, oldest first."""
        if not current:
            return []
        steps = self.script.revision_map.iterate_revisions(tuple(current), "base")
        return [revision.revision for revision in reversed(list(steps))]

    @property
    def directory(self) -> str:
        return str(self.script.dir)

    def path(self, revision: str) -> str:
        script = self.script.get_revision(revision)
        if script is None:
            raise KeyError(f"no revision script has the id {revision}")
        return str(script.path)

    def pending(self, current: Sequence[str]) -> list[str]:
        """Revisions between the database's and the heads, in the order they apply."""
        lower: Any = tuple(current) if current else "base"
        steps = self.script.revision_map.iterate_revisions("heads", lower)
        return [revision.revision for revision in reversed(list(steps))]


@dataclass(frozen=True)
class ScriptFiles:
    """What the checks of a process already serving at head need of the
    revision scripts: their heads, the revisions a database at those heads
    applied (oldest first), each one's file, and their folder. Read by a
    short-lived process of its own (`read_script_files`), so a serving
    process never imports Alembic and its revision map: about 10 MiB of each
    worker's memory for the rest of its life."""

    heads: tuple[str, ...]
    in_order: tuple[str, ...]
    paths: dict[str, str]
    directory: str

    def applied(self, current: Sequence[str]) -> list[str]:
        if tuple(sorted(current)) != self.heads:
            raise ValueError(f"only the revisions at the heads are known, not at {current}")
        return list(self.in_order)

    def path(self, revision: str) -> str:
        return self.paths[revision]


class ScriptsUnreadable(Exception):
    """The process reading the revision scripts failed; its last words."""


# How long the process reading the scripts may take, in seconds.
READ_SCRIPTS_TIMEOUT = 120.0


async def read_script_files(config_path: Path) -> ScriptFiles:
    """The revision scripts, read by a process of their own (this module run
    with the same interpreter and import path)."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        __name__,
        str(config_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), READ_SCRIPTS_TIMEOUT)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        last = err.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise ScriptsUnreadable(
            f"reading the revision scripts failed (exit {process.returncode}): {last[0]}"
        )
    found = json.loads(out)
    return ScriptFiles(
        heads=tuple(found["heads"]),
        in_order=tuple(found["in_order"]),
        paths=found["paths"],
        directory=found["directory"],
    )


def _print_script_files(config_path: Path) -> None:
    revisions = load_revisions(config_path)
    in_order = revisions.applied(revisions.heads)
    json.dump(
        {
            "heads": list(revisions.heads),
            "in_order": in_order,
            "paths": {revision: revisions.path(revision) for revision in in_order},
            "directory": revisions.directory,
        },
        sys.stdout,
    )


def load_revisions(config_path: Path) -> Revisions:
    """Read the revision scripts (slow with a long history: call it in a thread)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(config_path))
    # Resolve the map now so later lookups do no file reading on the event loop.
    script.get_heads()
    return Revisions(script)


async def current_revisions(connection: AsyncConnection) -> tuple[str, ...]:
    """The revisions recorded in the database; empty when it has none yet.

    One round trip in the common case (the readiness probe reads it as often as
    it would run `SELECT 1`); a database without the version table answers
    with an error, which is rolled back.
    """
    try:
        rows = await connection.scalars(text(f"SELECT version_num FROM {VERSION_TABLE}"))
    except DBAPIError as error:
        if sqlstate(error) != _UNDEFINED_TABLE:
            raise
        await connection.rollback()
        return ()
    revisions = tuple(sorted(rows))
    await connection.commit()
    return revisions


def upgrade_to_heads(
    connection: Connection,
    config_path: Path,
    on_step: StepCallback | None = None,
    audit_pending: list[dict[str, Any]] | None = None,
) -> None:
    """Upgrade on the given connection; env.py uses it instead of connecting.

    The connection must not be inside a transaction: Alembic would then treat
    the transaction as the caller's and never commit its revisions one by one.
    """
    from alembic import command

    if connection.in_transaction():
        raise RuntimeError("upgrade_to_heads needs a connection outside any transaction")
    config = alembic_config(
        config_path, connection=connection, on_version_apply=on_step, runner=RUNNER_BOOTSTRAP
    )
    if audit_pending is not None:
        # The audit rows of revisions this run applied before the audit table
        # existed, kept across its retries (audit.py, AuditWriter).
        config.attributes["audit_pending"] = audit_pending
    command.upgrade(config, "heads")


if __name__ == "__main__":
    _print_script_files(Path(sys.argv[1]))
