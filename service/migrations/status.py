"""The migration state that readiness reports.

One mutable object per process, shared by the bootstrap (which writes it) and
the request handlers (which read it). Requests get a shallow copy of the
lifespan state, so the phase must live inside this object, never in a field
that gets reassigned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from service.migrations.lock import LockHolder


class Phase(StrEnum):
    STARTING = "starting"
    WAITING_FOR_DATABASE = "waiting_for_database"
    CHECKING = "checking"
    WAITING_FOR_LOCK = "waiting_for_lock"
    MIGRATING = "migrating"
    WAITING_FOR_SCHEMA = "waiting_for_schema"
    READY = "ready"
    # Was ready, then the database left this code's heads (a downgrade, another
    # branch): unready until the schema is back at head.
    SCHEMA_CHANGED = "schema_changed"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass
class MigrationStatus:
    """What the bootstrap is doing now; `as_json()` is the body of /readyz."""

    phase: Phase = Phase.STARTING
    current_revision: tuple[str, ...] = ()
    target_revision: tuple[str, ...] = ()
    pending: list[str] = field(default_factory=list)
    applied: int = 0
    lock_timeout_retries: int = 0
    lock_timeout_seconds: float = 0.0
    lock_wait_seconds: float = 0.0
    revision_seconds: dict[str, float] = field(default_factory=dict)
    lock_holder: LockHolder | None = None
    error: str | None = None
    # What a final error is (service/migrations/errors.py `failure_kind`, or the
    # bootstrap's own: pooler, stale_manifest, unknown_revision, ...).
    failure: str | None = None
    migrated_here: bool = False
    schema_ahead: bool = False
    verification: str | None = None
    phase_since: float = field(default_factory=time.monotonic)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def ready(self) -> bool:
        return self.phase is Phase.READY

    def enter(self, phase: Phase, *, error: str | None = None, failure: str | None = None) -> None:
        if phase is not self.phase:
            self.phase = phase
            self.phase_since = time.monotonic()
        self.error = error
        self.failure = failure
        if phase is not Phase.WAITING_FOR_LOCK:
            self.lock_holder = None

    def as_json(self) -> dict[str, object]:
        body: dict[str, object] = {
            "status": "ready" if self.ready else "unready",
            "phase": self.phase.value,
            "phase_seconds": round(time.monotonic() - self.phase_since, 3),
            "current_revision": _revision_text(self.current_revision),
            "target_revision": _revision_text(self.target_revision),
            "migrated_here": self.migrated_here,
            "schema_ahead": self.schema_ahead,
        }
        if self.verification is not None:
            body["verification"] = self.verification
        if self.phase is Phase.MIGRATING:
            step = min(self.applied + 1, len(self.pending))
            body["migration"] = {
                "step": step,
                "of": len(self.pending),
                "revision": self.pending[step - 1] if self.pending else None,
                "pending": self.pending[self.applied :],
                "lock_timeout_retries": self.lock_timeout_retries,
                "lock_timeout_seconds": self.lock_timeout_seconds,
            }
        if self.phase is Phase.WAITING_FOR_LOCK:
            body["lock_holder"] = self.lock_holder.as_json() if self.lock_holder else None
        if self.error is not None:
            body["error"] = self.error
        if self.failure is not None:
            body["failure"] = self.failure
        return body


def _revision_text(revisions: tuple[str, ...]) -> str | None:
    return ",".join(revisions) if revisions else None
