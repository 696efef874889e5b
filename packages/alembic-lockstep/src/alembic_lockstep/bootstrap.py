"""The migration bootstrap: bring the schema to head, exactly once across a fleet.

`run()` takes one of two paths, and the status (status.py, whose table lists
every transition) says where it is:

- the fast path: the database is at the heads of the heads manifest (heads.py):
  check -> ready_by_manifest, without importing Alembic, parsing a revision
  script or taking the lock; the scripts are parsed and checked a few seconds
  later, while serving;
- the scripts path: parse the revision scripts, then either migrate (check ->
  poll the advisory lock on a dedicated connection, proven to be one server
  session -> check again -> migrate, one transaction per revision -> release
  the lock -> check) or, when this process does not migrate, wait for the
  schema; verify the checksums -> ready (or ready_ahead).

Then the schema watch (watch.py) keeps readiness true to the database's revision.

Only a lost or refused connection sends it to waiting for the database (a
connection lost in the middle of a migration, a bounded number of times); any
other error is final (fail), and readiness reports what it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from alembic_lockstep import holds, lock
from alembic_lockstep.config import MigrationConfig, Verify
from alembic_lockstep.connections import create_migration_engine, milliseconds
from alembic_lockstep.edits import EditRecordError
from alembic_lockstep.errors import (
    describe_error,
    failure_kind,
    is_lock_timeout,
    is_statement_timeout,
    is_unreachable,
    one_traceback,
)
from alembic_lockstep.heads import read_heads
from alembic_lockstep.logs import make_visible
from alembic_lockstep.retry import backoff, lock_retry_pause, lock_timeout
from alembic_lockstep.scripts import (
    Revisions,
    ScriptFiles,
    current_revisions,
    load_revisions,
    read_script_files,
    upgrade_to_heads,
)
from alembic_lockstep.status import MigrationStatus, Phase
from alembic_lockstep.verify import Lineage, lineage_of_unknown, verify_checksums
from alembic_lockstep.watch import SchemaWatch

if TYPE_CHECKING:
    from alembic.runtime.migration import MigrationInfo

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Called once with the first connection the bootstrap opens on the application's
# engine (this service checks its pools against the server's connections there).
StartupCheck = Callable[[AsyncConnection], Awaitable[None]]

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
# Failures whose cause can go away (a report that held a table, a failover, a
# statement slow on a busy server, an operator's cancel): a process that stays
# up after one (exit_on_failure false) is ready again once the schema reaches
# head by any migrator, so no worker of a replica stays failed while its
# siblings serve. Any other failure (a revision's own error, an unknown or
# edited revision, a pooler, credentials) fails every worker alike.
RECOVERABLE_FAILURES = frozenset(
    {"lock_timeout", "connection_lost", "statement_timeout", "cancelled"}
)


def _meanings(config: MigrationConfig) -> dict[str, str]:
    """What a final database error means for the operator, by `failure_kind`."""
    return {
        "statement_timeout": f"a statement ran longer than {config.named('statement_timeout')}",
        "cancelled": "a statement was cancelled (pg_cancel_backend): the migration stops",
        "permission_denied": "the database role lacks a privilege (docs/operations/database-roles.md)",
        "authentication_failed": "the database refused the credentials of the URL",
        "missing_database": "the database of the URL does not exist",
        "tls": "the TLS connection failed (sslmode, sslrootcert)",
        "pooler": "a pooler refused the migration session's settings, or shared its "
        "prepared statements between sessions; "
        + lock.pooler_advice(config.named("migration_url")),
    }


def _being_cancelled() -> bool:
    """True while the running task is being cancelled (the process stops)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class MigrationFailed(Exception):
    """The schema could not be brought to head; the message says why, `kind` what
    it is (errors.py `failure_kind`, or pooler, connection_lost, stale_manifest,
    unknown_revision, edited_revision)."""

    def __init__(self, message: str, kind: str = "error"):
        super().__init__(message)
        self.kind = kind


class Bootstrap:
    """Runs once per process on the application's `engine` (a pool for its own
    reads: the revision, the audit trail); migrates on a connection of its own.
    `status` tells readiness what it is doing (pass one to share a status made
    earlier, for metrics registered before the lifespan)."""

    def __init__(
        self,
        config: MigrationConfig,
        engine: AsyncEngine,
        *,
        status: MigrationStatus | None = None,
        startup_check: StartupCheck | None = None,
        hold_lock_after_failure: bool = False,
    ):
        """`hold_lock_after_failure`: a process that will exit because its migration
        failed keeps the lock until it exits, so its sibling workers and the other
        replicas wait instead of running the failing revision while it reports."""
        self.config = config
        self.engine = engine
        self.status = status or MigrationStatus()
        self.lock = lock.MigrationLock.of(config)
        self.watch = SchemaWatch(self.status, engine, config.poll_interval, self._judge_after_ready)
        self._revisions: Revisions | None = None
        self._manifest_heads: tuple[str, ...] = ()
        self._startup_check = startup_check
        self._step_started = time.monotonic()
        self._started = time.monotonic()
        self.hold_lock_after_failure = hold_lock_after_failure
        self._kept_session: contextlib.AsyncExitStack | None = None
        self._recovery = asyncio.Lock()
        self._hold_logged: holds.Hold | None = None

    async def run(self) -> None:
        """Serve: reach head by one of the two paths (or raise MigrationFailed),
        then keep readiness true to the database."""
        make_visible(self.config.log_format)
        self._started = time.monotonic()
        try:
            if await self._at_head_by_manifest():
                await self._fast_path()
            else:
                await self._scripts_path(migrate=self.config.migrate_on_startup)
        except MigrationFailed as error:
            if not self._may_recover():
                raise
            await self._recover(error)
        await self.watch.run()

    def _may_recover(self) -> bool:
        return (
            self.status.phase is Phase.FAILED
            and self.status.failure in RECOVERABLE_FAILURES
            and not self.config.exit_on_failure
        )

    async def _recover(self, error: MigrationFailed) -> None:
        """Failed for a cause that can go away: poll until the schema is at head
        (brought there by another process) and serve again; raise MigrationFailed
        if the checks then fail."""
        logger.info(
            "this process turns ready again once the schema reaches head "
            "(another replica's migration, or `migrate`); checked every %.1fs",
            self.config.poll_interval,
        )
        while not await self.recover_if_at_head():
            if not self._may_recover():
                raise MigrationFailed(
                    self.status.error or str(error), self.status.failure or "error"
                )
            await asyncio.sleep(self.config.poll_interval)

    async def recover_if_at_head(self) -> bool:
        """True when ready. A process failed for a cause that can go away reads the
        revision (readiness probes and API requests call this too, so no request
        waits for the next poll): at head, it checks the scripts and turns ready."""
        async with self._recovery:
            if not self._may_recover():
                return self.status.ready
            try:
                async with self.engine.connect() as connection:
                    at_head = await self._read_current(connection)
            except Exception as error:
                if not isinstance(error, MigrationFailed) and not is_unreachable(error):
                    logger.warning("could not read the revision: %s", describe_error(error))
                return False
            if not at_head:
                return False
            self.status.recover()
            try:
                async with self._final_errors():
                    await self._check_scripts(from_manifest=False)
            except MigrationFailed:
                return False
            self._ready(by_manifest=False)
            return True

    async def migrate(self, give_up_after: float | None = None) -> None:
        """Bring the schema to head once and check it (a one-off migrator: a Job);
        raise MigrationFailed, or TimeoutError when waiting and migrating took
        longer than `give_up_after` seconds (the checks are not bounded)."""
        make_visible(self.config.log_format)
        self._started = time.monotonic()
        by_manifest = await asyncio.wait_for(self._reach_head(), give_up_after)
        async with self._final_errors():
            await self._check_scripts(from_manifest=by_manifest)
        self._ready(by_manifest)

    async def _fast_path(self) -> None:
        """At the manifest's heads: ready without parsing the revision scripts,
        which are checked CHECK_SCRIPTS_AFTER seconds later, while serving (before
        ready when verification is strict)."""
        if self.config.verify is Verify.STRICT:
            async with self._final_errors():
                await self._check_scripts(from_manifest=True)
            self._ready(by_manifest=True)
            return
        self._ready(by_manifest=True)
        await self._check_scripts_while_serving()

    async def _scripts_path(self, *, migrate: bool) -> None:
        """Behind head, or no usable manifest: migrate (or wait for another
        process to), then verify the applied revisions' checksums."""
        async with self._final_errors():
            await self._scripts()
            if migrate:
                await self._verify_before_migrating()
                await self._migrate_when_not_held()
            else:
                await self._wait_for_schema()
            await self._retry_while_unreachable(self._check_scripts_at_head)
        self._ready(by_manifest=False)

    async def _check_scripts_at_head(self) -> None:
        """Verify at head; a refused connection (a server out of slots while the
        fleet's workers reconnect) is waited out like the check's."""
        if self.status.phase is Phase.WAITING_FOR_DATABASE:
            self.status.check()  # back from waiting: ready is reached from a check
        await self._check_scripts(from_manifest=False)

    async def _verify_before_migrating(self) -> None:
        """With strict verification, an edited revision refuses the start before
        any revision is applied: a refused start never moves the schema (the
        checks after migrating verify the new steps too)."""
        if self.config.verify is not Verify.STRICT:
            return
        revisions = await self._scripts()

        async def verify() -> None:
            self.status.check()
            await self._verify(revisions)

        await self._retry_while_unreachable(verify)

    async def _migrate_when_not_held(self) -> None:
        """Migrate; while a revision to apply is held, check again every poll interval."""
        while True:
            if await self._retry_while_unreachable(self._migrate_once):
                return
            await asyncio.sleep(self.config.poll_interval)

    async def _reach_head(self) -> bool:
        """Migrate to head; True when the heads manifest said it was there already."""
        if await self._at_head_by_manifest():
            return True
        async with self._final_errors():
            await self._scripts()
            await self._verify_before_migrating()
            if not await self._retry_while_unreachable(self._migrate_once):
                raise MigrationFailed(
                    f"{self.status.error}; a one-off migrate lifts it with --resume", "held"
                )
        return False

    def _ready(self, by_manifest: bool) -> None:
        if by_manifest:
            self.status.ready_by_manifest()
        else:
            self.status.reach_head()
        logger.info(
            "schema at head %s after %.3fs",
            ",".join(self.status.target_revision),
            time.monotonic() - self._started,
        )

    @contextlib.asynccontextmanager
    async def _final_errors(self) -> AsyncIterator[None]:
        """Report a final error (fail, with what it is) or a stop."""
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
            if _being_cancelled():
                # A stop (SIGTERM) that interrupted a statement can surface as
                # the driver's or SQLAlchemy's error on the next one (an
                # autocommit block's PendingRollbackError): a stop, rolled back.
                self._stopped()
                raise asyncio.CancelledError from error
            failure = self._final_database_error(error)
            if failure.kind == "cancelled" and self.status.phase is Phase.MIGRATING:
                failure = await self._hold_cancelled(failure)
            self._fail(failure, trace=error if failure.kind == "error" else None)
            raise failure from error

    def _final_database_error(self, error: Exception) -> MigrationFailed:
        """The error, with what it means and the revision it stopped."""
        kind = failure_kind(error)
        message = describe_error(error)
        if self.status.phase is Phase.MIGRATING:
            message = f"revision {self.status.running_revision} failed: {message}"
        meanings = _meanings(self.config)
        if kind in meanings:
            message = f"{meanings[kind]}: {message}"
        return MigrationFailed(message, kind)

    async def _hold_cancelled(self, failure: MigrationFailed) -> MigrationFailed:
        """An operator cancelled the running revision: hold it for the whole fleet
        (holds.py), so that no process runs it again until the hold is lifted."""
        revision = self.status.running_revision or "?"
        engine = create_migration_engine(self.config)
        try:
            async with engine.connect() as connection:
                recorded = await holds.record_hold(connection, revision, str(failure))
        except Exception as error:
            logger.warning("could not record a hold on %s: %s", revision, describe_error(error))
            recorded = False
        finally:
            await engine.dispose()
        if not recorded:
            return failure
        return MigrationFailed(
            f"{failure}; revision {revision} is held: no process runs it until "
            f"`{self.config.resume_command}`",
            failure.kind,
        )

    async def _held(self, connection: AsyncConnection) -> bool:
        """True (phase held) when a revision this process would apply is held."""
        pending = set(self.status.pending)
        hold = next(
            (h for h in await holds.active_holds(connection) if h.revision in pending), None
        )
        if hold is None:
            return False
        error = (
            f"revision {hold.revision} is held since {hold.held_at.isoformat()} "
            f"({hold.reason}); lift the hold with `{self.config.resume_command}`"
        )
        if hold != self._hold_logged:
            self._hold_logged = hold
            logger.warning("not migrating: %s", error, extra={"revision": hold.revision})
        self.status.held(hold, error)
        return True

    def _fail(self, error: MigrationFailed, trace: BaseException | None = None) -> None:
        """One line with the cause; with `trace`, one traceback (a revision's own error)."""
        self.status.fail(str(error), error.kind)
        extra = {"error_trace": one_traceback(trace)} if trace is not None else {}
        logger.error("migration failed (%s): %s", error.kind, error, extra=extra)

    def _stopped(self) -> None:
        was = self.status.phase
        self.status.stop(f"stopped while {was.value}")
        if was is Phase.MIGRATING:
            logger.warning(
                "migration stopped at %s: a revision in progress was rolled back",
                ",".join(self.status.current_revision) or "base",
            )
        else:
            logger.info("bootstrap stopped while %s", was.value)

    async def _scripts(self) -> Revisions:
        """The parsed revision scripts, read once (in a thread: slow with a long history)."""
        if self._revisions is None:
            self._revisions = await asyncio.to_thread(load_revisions, self.config.alembic_config)
            self.status.aim_at(self._revisions.heads)
        return self._revisions

    async def _at_head_by_manifest(self) -> bool:
        """True when the heads manifest matches the scripts and the database is at its heads."""
        async with self._final_errors():
            heads = await asyncio.to_thread(read_heads, self.config.alembic_config)
            if heads is None:
                return False
            self._manifest_heads = heads
            self.status.aim_at(heads)

            async def at_heads() -> bool:
                self.status.check()
                async with self.engine.connect() as connection:
                    await self._run_startup_check(connection)
                    current = await current_revisions(connection)
                self.status.observe(current, [])
                if current != heads:
                    await self._close_idle_connections()
                return current == heads

            return await self._retry_while_unreachable(at_heads)

    async def _run_startup_check(self, connection: AsyncConnection) -> None:
        if self._startup_check is not None:
            check, self._startup_check = self._startup_check, None
            await check(connection)

    async def _check_scripts(
        self, from_manifest: bool, revisions: Revisions | ScriptFiles | None = None
    ) -> None:
        """The manifest must name the scripts' heads; then verify checksums."""
        if revisions is None:
            revisions = await self._scripts()
        if from_manifest and revisions.heads != self._manifest_heads:
            raise MigrationFailed(
                f"the heads manifest names {','.join(self._manifest_heads)} but the revision "
                f"scripts' heads are {','.join(revisions.heads)}: "
                f"run `{self.config.write_heads_command}`",
                "stale_manifest",
            )
        await self._verify(revisions)

    async def _check_scripts_while_serving(self) -> None:
        await asyncio.sleep(CHECK_SCRIPTS_AFTER)
        try:
            await self._check_scripts(from_manifest=True, revisions=await self._script_files())
        except MigrationFailed as error:
            self._fail(error)
            raise
        except Exception as error:
            # Only the checks failed (the schema is at head): report, keep serving.
            logger.warning("could not check the revision scripts: %s", describe_error(error))

    async def _script_files(self) -> ScriptFiles | Revisions:
        """The scripts read by a process of their own, so this one serves
        without Alembic; read here when no process can be started."""
        try:
            return await read_script_files(self.config.alembic_config)
        except OSError as error:
            logger.info("reading the revision scripts in this process: %s", error)
            return await self._scripts()

    async def _retry_while_unreachable(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run `attempt`, waiting and retrying while the database cannot be reached."""
        failures = 0
        losses_while_migrating = 0
        while True:
            try:
                return await attempt()
            except Exception as error:
                if not is_unreachable(error) and not self._read_timed_out(error):
                    raise
                message = describe_error(error)
                if self.status.phase is Phase.MIGRATING:
                    losses_while_migrating += 1
                    self._give_up_after_losses(losses_while_migrating, message)
                if failures == 0:
                    logger.warning("waiting for the database: %s", message)
                self.status.lose_database(message)
                await asyncio.sleep(backoff(failures, _RETRY_FIRST, self.config.retry_max_interval))
                failures += 1

    def _read_timed_out(self, error: BaseException) -> bool:
        """A read cut by its statement timeout before migrating: the
        application's pool may bound its statements by the requests' timeout,
        which a busy server can pass. Waited out and retried as an absent
        database is (readiness says why), never a final failure; a revision's
        statement cut while migrating still is one."""
        return self.status.phase is not Phase.MIGRATING and is_statement_timeout(error)

    def _give_up_after_losses(self, losses: int, message: str) -> None:
        revision = self.status.running_revision
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

    async def _read_current(self, connection: AsyncConnection, *, serving: bool = False) -> bool:
        """Observe the database's revision; True when this code can serve it (at
        head, or ahead of it on its own line when that is allowed; `serving`:
        also ahead by revisions the trail cannot place, see _accept_ahead)."""
        revisions = await self._scripts()
        current = await current_revisions(connection)
        unknown = [revision for revision in current if not revisions.is_known(revision)]
        if unknown:
            await self._accept_ahead(connection, revisions, current, unknown, serving=serving)
            return True
        self.status.observe(current, revisions.pending(current))
        return current == revisions.heads

    async def _judge_after_ready(self, connection: AsyncConnection) -> str | None:
        """For the schema watch: None when this code can serve the database's
        revision, else why not."""
        try:
            if await self._read_current(connection, serving=True):
                return None
        except MigrationFailed as refused:
            return str(refused)
        return (
            f"the database is at {','.join(self.status.current_revision) or 'no revision'}, "
            f"behind this code's head {','.join(self.status.target_revision)} (a downgrade?): "
            "ready again once it is back at head"
        )

    async def _accept_ahead(
        self,
        connection: AsyncConnection,
        revisions: Revisions,
        current: tuple[str, ...],
        unknown: list[str],
        *,
        serving: bool,
    ) -> None:
        """A database revision this code does not know: serve only if it is ahead
        on this code's own line (and that is allowed); else MigrationFailed.

        A process already serving also keeps serving a schema that moved to
        revisions the trail cannot place (SQL applied without its audit rows),
        reported, when ahead is allowed: it was at head a moment ago, and taking
        the whole fleet out of rotation is an outage. A process that starts on
        such a schema has no such evidence and stays unready; on a diverged
        schema (the trail says another branch) nothing serves."""
        lineage, reason = await lineage_of_unknown(connection, revisions, unknown)
        described = f"the database is at {','.join(unknown)}, unknown to this code: {reason}"
        unplaced = lineage is Lineage.UNKNOWN and serving
        if lineage is not Lineage.AHEAD and not unplaced:
            raise MigrationFailed(f"{described} ({lineage.value})", "unknown_revision")
        if not self.config.allow_schema_ahead:
            raise MigrationFailed(
                f"{described}; {self.config.named('allow_schema_ahead')} is false",
                "unknown_revision",
            )
        note = f"{described}; still serving, as before it moved" if unplaced else None
        if not self.status.schema_ahead or note != self.status.schema_ahead_unplaced:
            logger.warning("serving a schema ahead of this code: %s", note or described)
        self.status.observe(current, [], ahead=True, unplaced=note)

    async def _verify(self, revisions: Revisions | ScriptFiles) -> None:
        """Compare the applied revisions' files with the checksums recorded when they ran."""
        if self.config.verify is Verify.OFF:
            return
        applied = revisions.applied(revisions.heads)
        try:
            async with self.engine.connect() as connection:
                result = await verify_checksums(connection, revisions, applied)
        except EditRecordError as error:
            if self.config.verify is Verify.STRICT:
                raise MigrationFailed(str(error), "edited_revision") from error
            logger.warning("could not verify the checksums: %s", error)
            return
        self.status.verified(result.describe())
        for accepted in result.accepted:
            logger.info(
                "revision %s was edited after it ran, accepted on the record: %s",
                accepted.revision,
                "; ".join(accepted.reasons),
                extra={"revision": accepted.revision},
            )
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
        if self.config.verify is Verify.STRICT:
            raise MigrationFailed(
                f"{result.describe()} ({self.config.named('verify')}=strict)",
                "edited_revision",
            )

    async def _check(self) -> bool:
        """The cheap common case: read the revision on the application's pool."""
        self.status.check()
        async with self.engine.connect() as connection:
            await self._run_startup_check(connection)
            at_head = await self._read_current(connection)
        if not at_head:
            await self._close_idle_connections()
        return at_head

    async def _close_idle_connections(self) -> None:
        """Behind head, keep no idle connection in the application's pool while
        waiting or migrating: on a server with few slots to spare, a fleet's idle
        pooled connections would leave none for the migrator's session."""
        await self.engine.dispose()

    async def _wait_for_schema(self) -> None:
        """This process does not migrate: wait for another one to reach head."""
        while not await self._retry_while_unreachable(self._check):
            self.status.wait_for_schema()
            await asyncio.sleep(self.config.poll_interval)

    async def _migrate_once(self) -> bool:
        """True at head (migrated here or elsewhere); False when a revision to
        apply is held (phase held)."""
        if await self._check():
            return True
        async with self.engine.connect() as reads:
            held = await self._held(reads)
        # The read went back to the pool: close it again while behind head
        # (a fleet on a server with few slots waits with its migration
        # sessions alone; tests/db/test_connection_budget.py).
        await self._close_idle_connections()
        if held:
            return False
        session = contextlib.AsyncExitStack()
        try:
            engine = create_migration_engine(self.config)
            session.push_async_callback(engine.dispose)
            connection = await session.enter_async_context(engine.connect())
            if not await self._wait_for_lock(connection):
                logger.info("another process brought the schema to head while this one waited")
                return True
            session.push_async_callback(self._release, connection)
            try:
                return await self._upgrade_holding_lock(connection)
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
                connection, self.lock, self._report_holder, lambda: self._read_current(connection)
            )
        finally:
            self.status.waited_for_lock(time.monotonic() - started)

    def _report_holder(self, holder: lock.LockHolder | None) -> None:
        if self.status.phase is not Phase.WAITING_FOR_LOCK or holder != self.status.lock_holder:
            logger.info("waiting for the migration lock, held by %s", holder)
        self.status.wait_for_lock(holder)

    async def _upgrade_holding_lock(self, connection: AsyncConnection) -> bool:
        """Check again (someone may have finished while we waited), then upgrade;
        a revision that cannot get its locks in time is rolled back and retried
        with a longer lock_timeout (retry.py)."""
        retries = self.config.lock_retries
        # The audit rows of revisions applied before the audit table exists,
        # kept for the attempt that creates it (audit.py).
        audit_pending: list[dict[str, Any]] = []
        for attempt in range(retries + 1):
            self.status.check()
            if await self._read_current(connection):
                return True
            if await self._held(connection):
                return False
            await self._set_lock_timeout(
                connection, lock_timeout(attempt, self.config.lock_timeout)
            )
            try:
                await self._upgrade(connection, audit_pending)
                return True
            except Exception as error:
                if not is_lock_timeout(error):
                    raise
                if attempt == retries:
                    raise MigrationFailed(
                        f"revision {self.status.running_revision} could not get its locks in "
                        f"{retries + 1} attempts (lock_timeout up to "
                        f"{milliseconds(self.status.lock_timeout_seconds)}): {describe_error(error)}",
                        "lock_timeout",
                    ) from error
            await connection.rollback()
            await self._pause_before_retry(attempt, retries)
        raise AssertionError("the last attempt returns or raises")

    async def _set_lock_timeout(self, connection: AsyncConnection, seconds: float) -> None:
        # A session setting: it also covers the statements of autocommit blocks.
        await connection.execute(text(f"SET lock_timeout = '{milliseconds(seconds)}'"))
        await connection.commit()
        self.status.lock_timeout_set(seconds)

    async def _pause_before_retry(self, attempt: int, retries: int) -> None:
        self.status.lock_timeout_hit()
        delay = lock_retry_pause(attempt)
        revision = self.status.running_revision
        logger.warning(
            "revision %s could not get its locks within %s; retry %d of %d in %.1fs, "
            "waiting up to %s",
            revision,
            milliseconds(self.status.lock_timeout_seconds),
            attempt + 1,
            retries,
            delay,
            milliseconds(lock_timeout(attempt + 1, self.config.lock_timeout)),
            extra={"revision": revision},
        )
        await asyncio.sleep(delay)

    async def _upgrade(
        self, connection: AsyncConnection, audit_pending: list[dict[str, Any]]
    ) -> None:
        self.status.migrate()
        logger.info(
            "migrating %s -> %s: %d revisions",
            ",".join(self.status.current_revision) or "base",
            ",".join(self.status.target_revision),
            len(self.status.pending),
        )
        self._step_started = time.monotonic()
        await connection.run_sync(
            upgrade_to_heads, self.config.alembic_config, self._on_step, audit_pending
        )
        self.status.check()

    def _on_step(self, step: MigrationInfo) -> None:
        """Called by Alembic inside each revision's transaction, before it commits."""
        now = time.monotonic()
        revision = step.up_revision_id or "?"
        seconds = now - self._step_started
        self._step_started = now
        self.status.step_applied(revision, seconds, tuple(sorted(step.destination_revision_ids)))
        logger.info(
            "applied revision %s (%d of %d) in %.3fs",
            revision,
            self.status.applied,
            len(self.status.pending),
            seconds,
            extra={"revision": revision},
        )

    async def _release(self, connection: AsyncConnection) -> None:
        """Release the lock; if that fails, closing the session frees it anyway."""
        if connection.invalidated:
            return  # the session, and its lock, ended with the lost connection
        try:
            await connection.rollback()
            released = await lock.release(connection, self.lock)
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
                self.lock.advice,
            )
            await connection.invalidate()
