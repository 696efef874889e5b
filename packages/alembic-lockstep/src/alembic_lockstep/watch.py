"""After ready: readiness stays true to the database's revision.

An operator's `alembic downgrade`, or another branch's migration, can move the
database off this code's heads while it serves; its requests would then fail on
missing tables and columns. Every poll interval (READINESS_POLL_INTERVAL), and
whenever the readiness probe reads a revision that differs from the one last seen, the watch
judges the database's revision again: at this code's heads (or ahead of them
on the same line, when that is allowed) the process stays or turns ready;
otherwise it turns unready with the phase `schema_changed` and the reason.

A ready process never migrates again on its own: a downgrade is an operator's
deliberate act, and a fleet that upgraded back behind their back would undo
it. It is ready again once the schema is back at head: by a new start of any
process that migrates, or by a one-off `migrate` (`python -m service migrate`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from alembic_lockstep.errors import describe_error, is_unreachable
from alembic_lockstep.scripts import current_revisions
from alembic_lockstep.status import MigrationStatus, Phase

logger = logging.getLogger(__name__)

# Judges the database's revision on a connection: None when this code can serve
# it, else why not.
Judge = Callable[[AsyncConnection], Awaitable[str | None]]
_WATCHED = (Phase.READY, Phase.SCHEMA_CHANGED)


class SchemaWatch:
    def __init__(self, status: MigrationStatus, engine: AsyncEngine, interval: float, judge: Judge):
        self.status = status
        self.engine = engine
        self.interval = interval
        self.judge = judge
        self._lock = asyncio.Lock()

    async def run(self) -> None:
        """Check the revision every `interval` seconds, for as long as the process serves."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception as error:
                # Readiness reports an unreachable database itself.
                if not is_unreachable(error):
                    logger.warning(
                        "could not check the schema's revision: %s", describe_error(error)
                    )

    async def noticed(self, current: tuple[str, ...]) -> None:
        """The readiness probe read `current`: judge it now if it changed."""
        if not self._unchanged(current):
            await self.check()

    async def check(self) -> None:
        async with self._lock:
            if self.status.phase not in _WATCHED:
                return
            async with self.engine.connect() as connection:
                current = await current_revisions(connection)
                if self._unchanged(current):
                    return
                problem = await self.judge(connection)
            self._settle(problem)

    def _unchanged(self, current: tuple[str, ...]) -> bool:
        return self.status.phase is Phase.READY and current == self.status.current_revision

    def _settle(self, problem: str | None) -> None:
        if problem is None:
            if self.status.phase is Phase.SCHEMA_CHANGED:
                logger.info(
                    "the schema is back at %s: ready again", ",".join(self.status.current_revision)
                )
                self.status.schema_restored()
            return
        if self.status.phase is Phase.READY:
            logger.error("no longer ready: %s", problem)
        self.status.schema_changed(problem)
