"""The migration bootstrap: bring the schema to head, exactly once across a fleet.

    wait for the database -> check -> at head? ready (no lock taken)
                                    -> otherwise: poll the advisory lock on a
                                       dedicated connection (proven to be one
                                       server session) -> check again ->
                                       upgrade, one transaction per revision ->
                                       release the lock -> ready
    ready -> watch the revision (service/migrations/watch.py)

Only a lost or refused connection sends it back to waiting for the database
(a connection lost in the middle of a migration, a bounded number of times);
any other error is final, and readiness reports what it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.db.connection_budget import warn_if_over_budget
from service.db.engines import create_migration_engine, milliseconds
from service.migrations import lock
from service.migrations.errors import describe_error, failure_kind, is_lock_timeout, is_unreachable
from service.migrations.heads import read_heads
from service.migrations.retry import backoff, lock_retry_pause, lock_timeout
from service.migrations.scripts import (
    Revisions,
    current_revisions,
    load_revisions,
    upgrade_to_heads,
)
from service.migrations.status import MigrationStatus, Phase
from service.migrations.verify import Lineage, lineage_of_unknown, verify_checksums
from service.migrations.watch import SchemaWatch
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
# A connection lost in the middle of a migration (a failover, an operator's
# pg_terminate_backend) is retried, with a new session and the lock taken
# again; this many losses while migrating fail the migration.
CONNECTION_LOSSES_WHILE_MIGRATING = 3


# What a final database error means for the operator, by `failure_kind`.
_MEANINGS = {
    "statement_timeout": "a statement ran longer than MIGRATION_STATEMENT_TIMEOUT",
    "cancelled": "a statement was cancelled (pg_cancel_backend): the migration stops",
    "permission_denied": "the database role lacks a privilege (README: Database roles)",
    "authentication_failed": "the database refused the credentials of the URL",
    "missing_database": "the database of the URL does not exist",
    "tls": "the TLS connection failed (sslmode, sslrootcert)",
    "pooler": f"a pooler refused the migration session's settings; {lock.POOLER_ADVICE}",
}


class MigrationFailed(Exception):
    """The schema could not be brought to head; the message says why, `kind` what
    it is (service/migrations/errors.py `failure_kind`, or pooler, connection_lost,
    stale_manifest, unknown_revision, edited_revision)."""

    def __init__(self, message: str, kind: str = "error"):
        super().__init__(message)
        self.kind = kind


class Bootstrap:
    """Runs once per process; `status` tells readiness what it is doing."""

    def __init__(
        self,
        settings: Settings,
        app_engine: AsyncEngine,
        status: MigrationStatus,
        *,
        hold_lock_after_failure: bool = False,
    ):
        """`hold_lock_after_failure`: a process that will exit because its migration
        failed keeps the lock until it exits, so its sibling workers and the other
        replicas wait instead of running the failing revision while it reports."""
        self.settings = settings
        self.app_engine = app_engine
        self.status = status
        self.key = lock.lock_key(settings.migration_lock_name)
        self.revisions: Revisions | None = None
        self.manifest_heads: tuple[str, ...] = ()
        self.watch = SchemaWatch(
            status, app_engine, settings.readiness_poll_interval, self._judge_after_ready
        )
        self._step_started = time.monotonic()
        self._started = time.monotonic()
        self._budget_checked = False
        self.hold_lock_after_failure = hold_lock_after_failure
        self._kept_session: contextlib.AsyncExitStack | None = None

    async def run(self) -> None:
        """Serve: reach head (or raise MigrationFailed), then keep readiness true.

        At head by the heads manifest, the process is ready without parsing the
        revision scripts; it parses them CHECK_SCRIPTS_AFTER seconds later, to
        check the manifest and the checksums, while it serves (before it is
        ready if MIGRATION_VERIFY=strict).
        """
        from_manifest = await self.reach_head(self.settings.migrate_on_startup, check_budget=True)
        check_later = from_manifest and self.settings.migration_verify != "strict"
        if not check_later:
            await self.check_scripts(from_manifest)
        self.mark_ready()
        if check_later:
            await self._check_scripts_while_serving()
        await self.watch.run()

    async def reach_head(self, migrate: bool, *, check_budget: bool = False) -> bool:
        """Bring the schema to head, or wait for it (`migrate` false); True when the
        heads manifest said so without parsing the scripts."""
        self._started = time.monotonic()
        self._budget_checked = not check_budget
        async with self._final_errors():
            if await self._at_head_by_manifest():
                return True
            await self._load_revisions()
            if migrate:
                await self._retry_while_unreachable(self._migrate_once)
            else:
                await self._wait_for_schema()
            return False

    async def check_scripts(self, from_manifest: bool) -> None:
        """Parse the scripts: the manifest must name their heads; then verify checksums."""
        async with self._final_errors():
            await self._check_scripts(from_manifest)

    def mark_ready(self) -> None:
        self.status.enter(Phase.READY)
        logger.info(
            "schema at head %s after %.3fs",
            ",".join(self.status.target_revision),
            time.monotonic() - self._started,
        )

    @contextlib.asynccontextmanager
    async def _final_errors(self) -> AsyncIterator[None]:
        """Report a final error (phase failed, with what it is) or a stop."""
        try:
            yield
        except MigrationFailed as error:
            self._fail(error)
            raise
        except asyncio.CancelledError:
            self._stopped()
            raise
        except lock.NotARealSession as error:
            failure = MigrationFailed(str(error), "pooler")
            self._fail(failure)
            raise failure from error
        except Exception as error:
            failure = self._final_database_error(error)
            self._fail(failure, exc_info=failure.kind == "error")
            raise failure from error

    def _final_database_error(self, error: Exception) -> MigrationFailed:
        """The error, with what it means and the revision it stopped."""
        kind = failure_kind(error)
        message = describe_error(error)
        if self.status.phase is Phase.MIGRATING:
            message = f"revision {self._running_revision()} failed: {message}"
        if kind in _MEANINGS:
            message = f"{_MEANINGS[kind]}: {message}"
        return MigrationFailed(message, kind)

    def _fail(self, error: MigrationFailed, exc_info: bool = False) -> None:
        self.status.enter(Phase.FAILED, error=str(error), failure=error.kind)
        logger.error("migration failed (%s): %s", error.kind, error, exc_info=exc_info)

    def _stopped(self) -> None:
        was = self.status.phase
        self.status.enter(Phase.STOPPED, error=f"stopped while {was.value}")
        if was is Phase.MIGRATING:
            logger.warning(
                "migration stopped at %s: a revision in progress was rolled back",
                ",".join(self.status.current_revision) or "base",
            )
        else:
            logger.info("bootstrap stopped while %s", was.value)

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
                await self._check_connection_budget(connection)
                current = await current_revisions(connection)
            self.status.current_revision = current
            return current == heads

        if not await self._retry_while_unreachable(at_heads):
            return False
        self.status.pending = []
        return True

    async def _check_connection_budget(self, connection: AsyncConnection) -> None:
        if not self._budget_checked:
            await warn_if_over_budget(connection, self.settings)
            self._budget_checked = True

    async def _check_scripts(self, from_manifest: bool) -> None:
        await self._load_revisions()
        assert self.revisions is not None
        if from_manifest and self.revisions.heads != self.manifest_heads:
            raise MigrationFailed(
                f"the heads manifest names {','.join(self.manifest_heads)} but the revision "
                f"scripts' heads are {','.join(self.revisions.heads)}: "
                "run `python -m service db heads --write`",
                "stale_manifest",
            )
        await self._verify()

    async def _check_scripts_while_serving(self) -> None:
        await asyncio.sleep(CHECK_SCRIPTS_AFTER)
        try:
            await self._check_scripts(from_manifest=True)
        except MigrationFailed as error:
            self._fail(error)
            raise
        except Exception as error:
            # Only the checks failed (the schema is at head): report, keep serving.
            logger.warning("could not check the revision scripts: %s", describe_error(error))

    async def _retry_while_unreachable(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run `attempt`, waiting and retrying while the database cannot be reached."""
        failures = 0
        losses_while_migrating = 0
        while True:
            try:
                return await attempt()
            except Exception as error:
                if not is_unreachable(error):
                    raise
                message = describe_error(error)
                if self.status.phase is Phase.MIGRATING:
                    losses_while_migrating += 1
                    self._give_up_after_losses(losses_while_migrating, message)
                if failures == 0:
                    logger.warning("waiting for the database: %s", message)
                self.status.enter(Phase.WAITING_FOR_DATABASE, error=message)
                await asyncio.sleep(
                    backoff(failures, _RETRY_FIRST, self.settings.database_retry_max_interval)
                )
                failures += 1

    def _give_up_after_losses(self, losses: int, message: str) -> None:
        revision = self._running_revision()
        if losses >= CONNECTION_LOSSES_WHILE_MIGRATING:
            raise MigrationFailed(
                f"the connection was lost {losses} times while migrating (revision {revision}); "
                f"last: {message}",
                "connection_lost",
            )
        logger.warning(
            "the connection was lost while migrating (revision %s, %d of %d allowed): %s",
            revision,
            losses,
            CONNECTION_LOSSES_WHILE_MIGRATING - 1,
            message,
            extra={"revision": revision},
        )

    async def _read_current(self, connection: AsyncConnection) -> bool:
        """Record the database's revision; True when it is at head."""
        assert self.revisions is not None
        current = await current_revisions(connection)
        self.status.current_revision = current
        unknown = [revision for revision in current if not self.revisions.is_known(revision)]
        if unknown:
            return await self._accept_ahead(connection, unknown)
        self.status.schema_ahead = False
        self.status.pending = self.revisions.pending(current)
        return current == self.revisions.heads

    async def _judge_after_ready(self, connection: AsyncConnection) -> str | None:
        """For the schema watch: None when this code can serve the database's
        revision, else why not."""
        await self._load_revisions()
        try:
            if await self._read_current(connection):
                return None
        except MigrationFailed as refused:
            return str(refused)
        return (
            f"the database is at {','.join(self.status.current_revision) or 'no revision'}, "
            f"behind this code's head {','.join(self.status.target_revision)} (a downgrade?): "
            "ready again once it is back at head"
        )

    async def _accept_ahead(self, connection: AsyncConnection, unknown: list[str]) -> bool:
        """A database revision this code does not know: serve only if it is ahead
        on this code's own line (and that is allowed)."""
        assert self.revisions is not None
        lineage, reason = await lineage_of_unknown(connection, self.revisions, unknown)
        described = f"the database is at {','.join(unknown)}, unknown to this code: {reason}"
        if lineage is not Lineage.AHEAD:
            raise MigrationFailed(f"{described} ({lineage.value})", "unknown_revision")
        if not self.settings.allow_schema_ahead:
            raise MigrationFailed(f"{described}; ALLOW_SCHEMA_AHEAD is false", "unknown_revision")
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
            raise MigrationFailed(
                f"{result.describe()} (MIGRATION_VERIFY=strict)", "edited_revision"
            )

    async def _check(self) -> bool:
        """The cheap common case: read the revision on the application pool."""
        self.status.enter(Phase.CHECKING)
        async with self.app_engine.connect() as connection:
            await self._check_connection_budget(connection)
            return await self._read_current(connection)

    async def _wait_for_schema(self) -> None:
        """MIGRATE_ON_STARTUP=false: wait for another process to reach head."""
        while not await self._retry_while_unreachable(self._check):
            self.status.enter(Phase.WAITING_FOR_SCHEMA)
            await asyncio.sleep(self.settings.readiness_poll_interval)

    async def _migrate_once(self) -> None:
        if await self._check():
            return
        session = contextlib.AsyncExitStack()
        try:
            engine = create_migration_engine(self.settings)
            session.push_async_callback(engine.dispose)
            connection = await session.enter_async_context(engine.connect())
            if not await self._wait_for_lock(connection):
                logger.info("another process brought the schema to head while this one waited")
                return
            session.push_async_callback(self._release, connection)
            try:
                await self._upgrade_holding_lock(connection)
            except Exception as error:
                if self.hold_lock_after_failure and not is_unreachable(error):
                    # The session, and the lock, outlive this attempt: the
                    # process releases it on exit (__init__'s docstring).
                    self._kept_session, session = session, contextlib.AsyncExitStack()
                raise
        finally:
            await session.aclose()

    async def release_kept_lock(self) -> None:
        """Release a lock kept after a failed migration (`hold_lock_after_failure`)."""
        if self._kept_session is not None:
            await self._kept_session.aclose()
            self._kept_session = None

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
        """Check again (someone may have finished while we waited), then upgrade;
        a revision that cannot get its locks in time is rolled back and retried
        with a longer lock_timeout (service/migrations/retry.py)."""
        retries = self.settings.migration_lock_retries
        for attempt in range(retries + 1):
            self.status.enter(Phase.CHECKING)
            if await self._read_current(connection):
                return
            await self._set_lock_timeout(
                connection, lock_timeout(attempt, self.settings.migration_lock_timeout)
            )
            try:
                await self._upgrade(connection)
                return
            except Exception as error:
                if not is_lock_timeout(error):
                    raise
                if attempt == retries:
                    raise MigrationFailed(
                        f"revision {self._running_revision()} could not get its locks in "
                        f"{retries + 1} attempts (lock_timeout up to "
                        f"{milliseconds(self.status.lock_timeout_seconds)}): {describe_error(error)}",
                        "lock_timeout",
                    ) from error
            await connection.rollback()
            await self._pause_before_retry(attempt, retries)

    async def _set_lock_timeout(self, connection: AsyncConnection, seconds: float) -> None:
        # A session setting: it also covers the statements of autocommit blocks.
        await connection.execute(text(f"SET lock_timeout = '{milliseconds(seconds)}'"))
        await connection.commit()
        self.status.lock_timeout_seconds = seconds

    async def _pause_before_retry(self, attempt: int, retries: int) -> None:
        self.status.lock_timeout_retries += 1
        delay = lock_retry_pause(attempt)
        logger.warning(
            "revision %s could not get its locks within %s; retry %d of %d in %.1fs, "
            "waiting up to %s",
            self._running_revision(),
            milliseconds(self.status.lock_timeout_seconds),
            attempt + 1,
            retries,
            delay,
            milliseconds(lock_timeout(attempt + 1, self.settings.migration_lock_timeout)),
            extra={"revision": self._running_revision()},
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
        if connection.invalidated:
            return  # the session, and its lock, ended with the lost connection
        try:
            await connection.rollback()
            released = await lock.release(connection, self.key)
        except Exception as error:
            logger.warning(
                "could not release the migration lock (%s); closing the session",
                describe_error(error),
            )
            await connection.invalidate()
            return
        if not released:
            logger.error(
                "the migration lock was not held by this session when it was released "
                "(ended where it was left); closing the session: %s",
                lock.POOLER_ADVICE,
            )
            await connection.invalidate()
