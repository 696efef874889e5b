"""The migration bootstrap: bring the schema to head, exactly once across a fleet.

    wait for the database -> check -> at head? ready (no lock taken)
                                    -> otherwise: poll the advisory lock on a
                                       dedicated connection -> check again ->
                                       upgrade, one transaction per revision ->
                                       release the lock -> ready

A lost connection at any step sends it back to waiting for the database; any
other error is final and readiness reports it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service import lock
from service.database import create_migration_engine
from service.errors_database import describe_error, is_lock_timeout, is_transient
from service.heads import read_heads
from service.migrations import Revisions, current_revisions, load_revisions, upgrade_to_heads
from service.retry import backoff
from service.status import MigrationStatus, Phase
from service.verify import Lineage, lineage_of_unknown, verify_checksums
from settings import Settings

if TYPE_CHECKING:
    from alembic.runtime.migration import MigrationInfo

logger = logging.getLogger("service.bootstrap")
T = TypeVar("T")

_RETRY_FIRST = 0.2
# How long a process started from the heads manifest serves before it parses
# the revision scripts to check them: parsing holds the GIL for a while (about
# 0.6 s with 1,000 revisions here) and should not slow the first probes and
# requests of a replica that has just become ready.
CHECK_SCRIPTS_AFTER = 5.0


class MigrationFailed(Exception):
    """The schema could not be brought to head; the message says why."""


class Bootstrap:
    """Runs once per process; `status` tells readiness what it is doing."""

    def __init__(self, settings: Settings, app_engine: AsyncEngine, status: MigrationStatus):
        self.settings = settings
        self.app_engine = app_engine
        self.status = status
        self.key = lock.lock_key(settings.migration_lock_name)
        self.revisions: Revisions | None = None
        self.manifest_heads: tuple[str, ...] = ()
        self._step_started = time.monotonic()

    async def run(self, *, migrate: bool | None = None) -> None:
        """Reach head (or fail); raise MigrationFailed on a final error.

        At head by the heads manifest, the process is ready without parsing the
        revision scripts; it parses them CHECK_SCRIPTS_AFTER seconds later, to
        check the manifest and the checksums, while it serves (before it is
        ready if MIGRATION_VERIFY=strict).
        """
        migrate = self.settings.migrate_on_startup if migrate is None else migrate
        started = time.monotonic()
        try:
            from_manifest = await self._at_head_by_manifest()
            if not from_manifest:
                await self._load_revisions()
                if migrate:
                    await self._retry_while_unreachable(self._migrate_once)
                else:
                    await self._wait_for_schema()
            if not from_manifest or self.settings.migration_verify == "strict":
                await self._check_scripts(from_manifest)
        except MigrationFailed as error:
            self._fail(str(error))
            raise
        except asyncio.CancelledError:
            self.status.enter(Phase.STOPPED, error=f"stopped while {self.status.phase.value}")
            logger.warning(
                "migration stopped at %s: a revision in progress was rolled back",
                ",".join(self.status.current_revision) or "base",
            )
            raise
        except Exception as error:
            message = describe_error(error)
            self._fail(message, exc_info=True)
            raise MigrationFailed(message) from error
        self.status.enter(Phase.READY)
        logger.info(
            "schema at head %s after %.3fs",
            ",".join(self.status.target_revision),
            time.monotonic() - started,
        )
        if from_manifest and self.settings.migration_verify != "strict":
            await self._check_scripts_while_serving()

    def _fail(self, message: str, exc_info: bool = False) -> None:
        self.status.enter(Phase.FAILED, error=message)
        logger.error("migration failed: %s", message, exc_info=exc_info)

    async def _load_revisions(self) -> None:
        if self.revisions is None:
            self.revisions = await asyncio.to_thread(load_revisions, self.settings.alembic_config)
            self.status.target_revision = self.revisions.heads

    async def _at_head_by_manifest(self) -> bool:
        """True when the heads manifest matches the scripts and the database is at its heads."""
        heads = await asyncio.to_thread(read_heads, self.settings.alembic_config)
        if heads is None:
            return False
        self.manifest_heads = heads
        self.status.target_revision = heads

        async def at_heads() -> bool:
            self.status.enter(Phase.CHECKING)
            async with self.app_engine.connect() as connection:
                current = await current_revisions(connection)
            self.status.current_revision = current
            return current == heads

        if not await self._retry_while_unreachable(at_heads):
            return False
        self.status.pending = []
        return True

    async def _check_scripts(self, from_manifest: bool) -> None:
        """Parse the scripts: the manifest must name their heads; then verify checksums."""
        await self._load_revisions()
        assert self.revisions is not None
        if from_manifest and self.revisions.heads != self.manifest_heads:
            raise MigrationFailed(
                f"the heads manifest names {','.join(self.manifest_heads)} but the revision "
                f"scripts' heads are {','.join(self.revisions.heads)}: "
                "run `python -m service db heads --write`"
            )
        await self._verify()

    async def _check_scripts_while_serving(self) -> None:
        await asyncio.sleep(CHECK_SCRIPTS_AFTER)
        try:
            await self._check_scripts(from_manifest=True)
        except MigrationFailed as error:
            self._fail(str(error))
            raise
        except Exception as error:
            # Only the checks failed (the schema is at head): report, keep serving.
            logger.warning("could not check the revision scripts: %s", describe_error(error))

    async def _retry_while_unreachable(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run `attempt`, waiting and retrying while the database cannot be reached."""
        failures = 0
        while True:
            try:
                return await attempt()
            except Exception as error:
                if not is_transient(error):
                    raise
                message = describe_error(error)
                if failures == 0:
                    logger.warning("waiting for the database: %s", message)
                self.status.enter(Phase.WAITING_FOR_DATABASE, error=message)
                await asyncio.sleep(
                    backoff(failures, _RETRY_FIRST, self.settings.database_retry_max_interval)
                )
                failures += 1

    async def _read_current(self, connection: AsyncConnection) -> bool:
        """Record the database's revision; True when it is at head."""
        assert self.revisions is not None
        current = await current_revisions(connection)
        self.status.current_revision = current
        unknown = [revision for revision in current if not self.revisions.is_known(revision)]
        if unknown:
            return await self._accept_ahead(connection, unknown)
        self.status.pending = self.revisions.pending(current)
        return current == self.revisions.heads

    async def _accept_ahead(self, connection: AsyncConnection, unknown: list[str]) -> bool:
        """A database revision this code does not know: serve only if it is ahead
        on this code's own line (and that is allowed)."""
        assert self.revisions is not None
        lineage, reason = await lineage_of_unknown(connection, self.revisions, unknown)
        described = f"the database is at {','.join(unknown)}, unknown to this code: {reason}"
        if lineage is not Lineage.AHEAD:
            raise MigrationFailed(f"{described} ({lineage.value})")
        if not self.settings.allow_schema_ahead:
            raise MigrationFailed(f"{described}; ALLOW_SCHEMA_AHEAD is false")
        if not self.status.schema_ahead:
            logger.warning("serving a schema ahead of this code: %s", described)
        self.status.schema_ahead = True
        self.status.pending = []
        return True

    async def _verify(self) -> None:
        """Compare the applied revisions' files with the checksums recorded when they ran."""
        if self.settings.migration_verify == "off":
            return
        assert self.revisions is not None
        applied = self.revisions.applied(self.revisions.heads)
        async with self.app_engine.connect() as connection:
            result = await verify_checksums(connection, self.revisions, applied)
        self.status.verification = result.describe()
        if result.ok:
            return
        for entry in result.edited:
            logger.warning(
                "revision %s was edited after it ran (recorded %s, file now %s)",
                entry.revision,
                entry.recorded[:12],
                entry.current[:12],
                extra={"revision": entry.revision},
            )
        if self.settings.migration_verify == "strict":
            raise MigrationFailed(f"{result.describe()} (MIGRATION_VERIFY=strict)")

    async def _check(self) -> bool:
        """The cheap common case: read the revision on the application pool."""
        self.status.enter(Phase.CHECKING)
        async with self.app_engine.connect() as connection:
            return await self._read_current(connection)

    async def _wait_for_schema(self) -> None:
        """MIGRATE_ON_STARTUP=false: wait for another process to reach head."""
        while not await self._retry_while_unreachable(self._check):
            self.status.enter(Phase.WAITING_FOR_SCHEMA)
            await asyncio.sleep(self.settings.readiness_poll_interval)

    async def _migrate_once(self) -> None:
        if await self._check():
            return
        engine = create_migration_engine(self.settings)
        try:
            async with engine.connect() as connection:
                if not await self._wait_for_lock(connection):
                    logger.info("another process brought the schema to head while this one waited")
                    return
                try:
                    await self._upgrade_holding_lock(connection)
                finally:
                    await self._release(connection)
        finally:
            await engine.dispose()

    async def _wait_for_lock(self, connection: AsyncConnection) -> bool:
        """True once this process holds the lock; False when the schema reached
        head meanwhile (read without the lock, as the first check was)."""
        started = time.monotonic()
        try:
            return await lock.acquire(
                connection, self.key, self._report_holder, lambda: self._read_current(connection)
            )
        finally:
            self.status.lock_wait_seconds += time.monotonic() - started

    def _report_holder(self, holder: lock.LockHolder | None) -> None:
        if self.status.phase is not Phase.WAITING_FOR_LOCK or holder != self.status.lock_holder:
            logger.info("waiting for the migration lock, held by %s", holder)
        self.status.enter(Phase.WAITING_FOR_LOCK)
        self.status.lock_holder = holder

    async def _upgrade_holding_lock(self, connection: AsyncConnection) -> None:
        """Check again (someone may have finished while we waited), then upgrade."""
        for attempt in range(self.settings.migration_lock_retries + 1):
            self.status.enter(Phase.CHECKING)
            if await self._read_current(connection):
                return
            try:
                await self._upgrade(connection)
                return
            except Exception as error:
                if not is_lock_timeout(error) or attempt == self.settings.migration_lock_retries:
                    raise
                await connection.rollback()
                self.status.lock_timeout_retries += 1
                delay = backoff(attempt, 0.5, 10.0)
                logger.warning(
                    "revision %s hit lock_timeout; retry %d of %d in %.1fs",
                    self._running_revision(),
                    attempt + 1,
                    self.settings.migration_lock_retries,
                    delay,
                )
                await asyncio.sleep(delay)

    def _running_revision(self) -> str | None:
        pending, applied = self.status.pending, self.status.applied
        return pending[applied] if applied < len(pending) else None

    async def _upgrade(self, connection: AsyncConnection) -> None:
        self.status.applied = 0
        self.status.enter(Phase.MIGRATING)
        logger.info(
            "migrating %s -> %s: %d revisions",
            ",".join(self.status.current_revision) or "base",
            ",".join(self.status.target_revision),
            len(self.status.pending),
        )
        self.status.migrated_here = True
        self._step_started = time.monotonic()
        await connection.run_sync(upgrade_to_heads, self.settings.alembic_config, self._on_step)

    def _on_step(self, step: MigrationInfo) -> None:
        """Called by Alembic inside each revision's transaction, before it commits."""
        now = time.monotonic()
        revision = step.up_revision_id or "?"
        self.status.revision_seconds[revision] = now - self._step_started
        self._step_started = now
        self.status.applied += 1
        self.status.current_revision = tuple(sorted(step.destination_revision_ids))
        logger.info(
            "applied revision %s (%d of %d) in %.3fs",
            revision,
            self.status.applied,
            len(self.status.pending),
            self.status.revision_seconds[revision],
            extra={"revision": revision},
        )

    async def _release(self, connection: AsyncConnection) -> None:
        """Release the lock; if that fails, closing the session frees it anyway."""
        try:
            await connection.rollback()
            await lock.unlock(connection, self.key)
        except Exception as error:
            logger.warning(
                "could not release the migration lock (%s); closing the session",
                describe_error(error),
            )
            await connection.invalidate()
