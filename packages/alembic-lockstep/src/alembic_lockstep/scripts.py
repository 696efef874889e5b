"""The revision scripts, and Alembic driven on the bootstrap's connection.

Everything here that touches Alembic's Python API is synchronous: the bootstrap
runs it through `AsyncConnection.run_sync` (database work) or a worker thread
(reading the revision scripts), so the event loop keeps serving probes.
Alembic is imported only when it is needed: a process whose database is at
head (alembic_lockstep/heads.py) never imports it before it is ready.
"""

from __future__ import annotations

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
