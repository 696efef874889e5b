"""The migration status: the bootstrap's state machine, and what readiness reports.

Every change of phase is a named transition of `MigrationStatus`, allowed only
from the phases the table `TRANSITIONS` gives it; any other raises
`IllegalTransition` and changes nothing. The table (docs/operations/bootstrap.md, "How the
bootstrap works" shows the same, and a test checks both against it):

    transition          to                     from
    check               checking               starting, waiting_for_database, checking,
                                               waiting_for_lock, migrating, waiting_for_schema,
                                               held
    lose_database       waiting_for_database   checking, waiting_for_lock, migrating
    wait_for_lock       waiting_for_lock       checking, waiting_for_lock
    migrate             migrating              checking
    wait_for_schema     waiting_for_schema     checking
    hold                held                   checking
    ready_by_manifest   ready                  checking
    ready               ready                  checking, waiting_for_lock
    ready_ahead         ready                  checking, waiting_for_lock
    schema_changed      schema_changed         ready, schema_changed
    schema_restored     ready                  schema_changed
    fail                failed                 starting, waiting_for_database, checking,
                                               waiting_for_lock, migrating, waiting_for_schema,
                                               held, ready
    recover             checking               failed
    stop                stopped                starting, waiting_for_database, checking,
                                               waiting_for_lock, migrating, waiting_for_schema,
                                               held

- check: read the database's revision (again after waiting, after taking the
  lock, before each attempt of a migration, and after migrating);
- lose_database: the connection was refused or lost; wait, with backoff;
- wait_for_lock: another process holds the lock; migrate: this one holds it,
  behind head; wait_for_schema: behind head, and this process does not migrate;
- hold: behind head, and a revision to apply is held (an operator cancelled
  it: holds.py); checked again every poll interval until the hold is lifted;
- ready_by_manifest: the fast path, at the heads of the heads manifest without
  parsing a revision script or taking the lock;
- ready: at head, checked, migrated here, or reached by another process while
  this one waited for the lock; ready_ahead: ahead of head on this code's own
  line (a rolled-back deploy), when that is allowed;
- schema_changed / schema_restored: after ready, the database left this code's
  heads (a downgrade, another branch), and came back;
- fail and stop end the bootstrap: a final error, or a cancel (SIGTERM);
- recover: a process that stays up after a failure whose cause can go away (a
  lock timeout, a lost connection, a statement timeout, a cancel) found the
  schema at head, brought there by another migrator: check the scripts, then
  ready.

One mutable object per process, shared by the bootstrap (which changes it
through these methods only) and readiness and metrics (which read it). The
phase lives inside this object: a lifespan state is copied for each request,
so a field that got reassigned would not be seen.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from alembic_lockstep.holds import Hold
from alembic_lockstep.lock import LockHolder

logger = logging.getLogger(__name__)


class Phase(StrEnum):
    STARTING = "starting"
    WAITING_FOR_DATABASE = "waiting_for_database"
    CHECKING = "checking"
    WAITING_FOR_LOCK = "waiting_for_lock"
    MIGRATING = "migrating"
    WAITING_FOR_SCHEMA = "waiting_for_schema"
    HELD = "held"
    READY = "ready"
    SCHEMA_CHANGED = "schema_changed"
    FAILED = "failed"
    STOPPED = "stopped"


class Transition(StrEnum):
    CHECK = "check"
    LOSE_DATABASE = "lose_database"
    WAIT_FOR_LOCK = "wait_for_lock"
    MIGRATE = "migrate"
    WAIT_FOR_SCHEMA = "wait_for_schema"
    HOLD = "hold"
    READY_BY_MANIFEST = "ready_by_manifest"
    READY = "ready"
    READY_AHEAD = "ready_ahead"
    SCHEMA_CHANGED = "schema_changed"
    SCHEMA_RESTORED = "schema_restored"
    FAIL = "fail"
    RECOVER = "recover"
    STOP = "stop"


_WORKING = frozenset(
    {
        Phase.STARTING,
        Phase.WAITING_FOR_DATABASE,
        Phase.CHECKING,
        Phase.WAITING_FOR_LOCK,
        Phase.MIGRATING,
        Phase.WAITING_FOR_SCHEMA,
        Phase.HELD,
    }
)
_AFTER_CHECK = frozenset({Phase.CHECKING})
_HEAD_SEEN = frozenset({Phase.CHECKING, Phase.WAITING_FOR_LOCK})

# transition: (the phases it may start from, the phase it leads to)
TRANSITIONS: dict[Transition, tuple[frozenset[Phase], Phase]] = {
    Transition.CHECK: (_WORKING, Phase.CHECKING),
    Transition.LOSE_DATABASE: (
        frozenset({Phase.CHECKING, Phase.WAITING_FOR_LOCK, Phase.MIGRATING}),
        Phase.WAITING_FOR_DATABASE,
    ),
    Transition.WAIT_FOR_LOCK: (_HEAD_SEEN, Phase.WAITING_FOR_LOCK),
    Transition.MIGRATE: (_AFTER_CHECK, Phase.MIGRATING),
    Transition.WAIT_FOR_SCHEMA: (_AFTER_CHECK, Phase.WAITING_FOR_SCHEMA),
    Transition.HOLD: (_AFTER_CHECK, Phase.HELD),
    Transition.READY_BY_MANIFEST: (_AFTER_CHECK, Phase.READY),
    Transition.READY: (_HEAD_SEEN, Phase.READY),
    Transition.READY_AHEAD: (_HEAD_SEEN, Phase.READY),
    Transition.SCHEMA_CHANGED: (
        frozenset({Phase.READY, Phase.SCHEMA_CHANGED}),
        Phase.SCHEMA_CHANGED,
    ),
    Transition.SCHEMA_RESTORED: (frozenset({Phase.SCHEMA_CHANGED}), Phase.READY),
    Transition.FAIL: (_WORKING | {Phase.READY}, Phase.FAILED),
    Transition.RECOVER: (frozenset({Phase.FAILED}), Phase.CHECKING),
    Transition.STOP: (_WORKING, Phase.STOPPED),
}
# The most recent transitions a status keeps, for tests and debugging.
HISTORY_LENGTH = 200


class IllegalTransition(RuntimeError):
    """A transition from a phase the table does not allow it from (a bug)."""


@dataclass
class MigrationStatus:
    """What the bootstrap is doing now; `as_json()` is the body of /readyz.

    Read the fields; change them only through the methods below (the
    transitions, and the records of what the bootstrap saw and did).
    """

    current_revision: tuple[str, ...] = ()
    target_revision: tuple[str, ...] = ()
    pending: list[str] = field(default_factory=list)
    applied: int = 0
    lock_timeout_retries: int = 0
    lock_timeout_seconds: float = 0.0
    lock_wait_seconds: float = 0.0
    revision_seconds: dict[str, float] = field(default_factory=dict)
    lock_holder: LockHolder | None = None
    hold: Hold | None = None
    error: str | None = None
    # What a final error is (errors.py `failure_kind`, or the bootstrap's own:
    # pooler, stale_manifest, unknown_revision, ...).
    failure: str | None = None
    migrated_here: bool = False
    schema_ahead: bool = False
    # Why a serving process keeps serving a schema ahead by revisions the audit
    # trail cannot place (bootstrap.py _accept_ahead); None otherwise.
    schema_ahead_unplaced: str | None = None
    verification: str | None = None
    phase_since: float = field(default_factory=time.monotonic)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    history: deque[tuple[Phase, Transition, Phase]] = field(
        default_factory=lambda: deque(maxlen=HISTORY_LENGTH)
    )
    _phase: Phase = field(default=Phase.STARTING, init=False)

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def ready(self) -> bool:
        return self._phase is Phase.READY

    @property
    def running_revision(self) -> str | None:
        """The revision being applied (or last attempted), while migrating."""
        return self.pending[self.applied] if self.applied < len(self.pending) else None

    # The transitions.

    def check(self) -> None:
        self._move(Transition.CHECK)

    def lose_database(self, error: str) -> None:
        self._move(Transition.LOSE_DATABASE, error=error)

    def wait_for_lock(self, holder: LockHolder | None) -> None:
        self._move(Transition.WAIT_FOR_LOCK)
        self.lock_holder = holder

    def migrate(self) -> None:
        self._move(Transition.MIGRATE)
        self.applied = 0
        self.migrated_here = True

    def wait_for_schema(self) -> None:
        self._move(Transition.WAIT_FOR_SCHEMA)

    def held(self, hold: Hold, error: str) -> None:
        self._move(Transition.HOLD, error=error)
        self.hold = hold

    def ready_by_manifest(self) -> None:
        self._move(Transition.READY_BY_MANIFEST)

    def reach_head(self) -> None:
        """Ready at head, or ahead of it on this code's line (`schema_ahead`)."""
        self._move(Transition.READY_AHEAD if self.schema_ahead else Transition.READY)

    def schema_changed(self, error: str) -> None:
        self._move(Transition.SCHEMA_CHANGED, error=error)

    def schema_restored(self) -> None:
        self._move(Transition.SCHEMA_RESTORED)

    def fail(self, error: str, failure: str) -> None:
        self._move(Transition.FAIL, error=error, failure=failure)

    def recover(self) -> None:
        self._move(Transition.RECOVER)

    def stop(self, error: str) -> None:
        self._move(Transition.STOP, error=error)

    def _move(
        self, transition: Transition, *, error: str | None = None, failure: str | None = None
    ) -> None:
        sources, target = TRANSITIONS[transition]
        if self._phase not in sources:
            raise IllegalTransition(
                f"{transition.value} is not a transition from {self._phase.value} "
                f"(only from {', '.join(sorted(sources))})"
            )
        logger.debug("phase %s -> %s (%s)", self._phase.value, target.value, transition.value)
        self.history.append((self._phase, transition, target))
        if target is not self._phase:
            self._phase = target
            self.phase_since = time.monotonic()
        self.error = error
        self.failure = failure
        if target is not Phase.WAITING_FOR_LOCK:
            self.lock_holder = None
        if target is not Phase.HELD:
            self.hold = None

    # What the bootstrap saw and did, without a change of phase.

    def aim_at(self, heads: tuple[str, ...]) -> None:
        """The heads this code brings the database to."""
        self.target_revision = heads

    def observe(
        self,
        current: tuple[str, ...],
        pending: list[str],
        *,
        ahead: bool = False,
        unplaced: str | None = None,
    ) -> None:
        """The database's revision, what it lacks of the heads, and whether it is
        ahead of them on this code's line (or ahead where the trail cannot place it)."""
        self.current_revision = current
        self.pending = pending
        self.schema_ahead = ahead
        self.schema_ahead_unplaced = unplaced

    def waited_for_lock(self, seconds: float) -> None:
        self.lock_wait_seconds += seconds

    def lock_timeout_set(self, seconds: float) -> None:
        self.lock_timeout_seconds = seconds

    def lock_timeout_hit(self) -> None:
        self.lock_timeout_retries += 1

    def step_applied(self, revision: str, seconds: float, current: tuple[str, ...]) -> None:
        self.revision_seconds[revision] = seconds
        self.applied += 1
        self.current_revision = current

    def verified(self, verification: str) -> None:
        self.verification = verification

    def as_json(self) -> dict[str, object]:
        body: dict[str, object] = {
            "status": "ready" if self.ready else "unready",
            "phase": self._phase.value,
            "phase_seconds": round(time.monotonic() - self.phase_since, 3),
            "current_revision": _revision_text(self.current_revision),
            "target_revision": _revision_text(self.target_revision),
            "migrated_here": self.migrated_here,
            "schema_ahead": self.schema_ahead,
        }
        if self.schema_ahead_unplaced is not None:
            body["schema_ahead_unplaced"] = self.schema_ahead_unplaced
        if self.verification is not None:
            body["verification"] = self.verification
        if self._phase is Phase.MIGRATING:
            step = min(self.applied + 1, len(self.pending))
            body["migration"] = {
                "step": step,
                "of": len(self.pending),
                "revision": self.pending[step - 1] if self.pending else None,
                "pending": self.pending[self.applied :],
                "lock_timeout_retries": self.lock_timeout_retries,
                "lock_timeout_seconds": self.lock_timeout_seconds,
            }
        if self._phase is Phase.HELD and self.hold is not None:
            body["hold"] = self.hold.as_json()
        if self._phase is Phase.WAITING_FOR_LOCK:
            body["lock_holder"] = self.lock_holder.as_json() if self.lock_holder else None
        if self.error is not None:
            body["error"] = self.error
        if self.failure is not None:
            body["failure"] = self.failure
        return body


def _revision_text(revisions: tuple[str, ...]) -> str | None:
    return ",".join(revisions) if revisions else None
