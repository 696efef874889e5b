"""The migration audit trail: one row per applied step, written through Alembic's
`on_version_apply` hook inside the step's own transaction, by the bootstrap and
by the `alembic` command line alike.

The table belongs to the application's schema: its models include it with
`define_audit_table(Base.metadata)` (so `alembic check` and autogenerate know
it), and a revision creates it like any other table. Until that revision has
run, the steps are kept and written by the revision that creates it.

A script rendered offline (`alembic upgrade A:B --sql`, applied later with
psql) writes the same rows: each revision's transaction ends with an insert
of its row (revision, parents, direction, checksum as the bootstrap records
them), timed and attributed by the session that applies it (`now()` is the
revision's transaction start, `clock_timestamp()` its end, the client address
and backend pid of that session), runner RUNNER_OFFLINE. It is guarded by the
audit table's existence, so a script starting below the revision that creates
the table records from that revision on.

The checksum is the SHA-256 (hex) of the revision file's text after
normalising it: decoded as UTF-8, every line ending (CRLF, CR) turned into LF,
trailing spaces and tabs removed from every line, trailing blank lines removed,
one final LF. Reformatting line endings or trailing blanks does not change it;
any other edit does.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Double,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, distinct_on
from sqlalchemy.engine import Connection, Dialect

if TYPE_CHECKING:
    from alembic.runtime.migration import MigrationInfo

AUDIT_TABLE = "schema_migration_audit"


def define_audit_table(metadata: MetaData) -> Table:
    """Define the audit table on `metadata`: an application includes it in its
    models' metadata this way, so that its migrations and `alembic check` know
    it (the constraint names follow the metadata's naming convention)."""
    return Table(
        AUDIT_TABLE,
        metadata,
        Column("id", BigInteger, Identity(always=True), primary_key=True),
        Column("revision", String(128), nullable=False),
        Column("down_revisions", ARRAY(String(128)), nullable=False),
        Column("direction", String(16), nullable=False),
        Column("started_at", DateTime(timezone=True), nullable=False),
        Column("finished_at", DateTime(timezone=True), nullable=False),
        Column("duration_seconds", Double, nullable=False),
        Column("host", String(255), nullable=False),
        Column("pid", Integer, nullable=False),
        Column("app_version", String(64), nullable=False),
        Column("database_user", String(128), nullable=False),
        Column("runner", String(32), nullable=False),
        Column("checksum", String(64)),
        CheckConstraint("direction IN ('upgrade', 'downgrade')", name="direction"),
        Index(f"{AUDIT_TABLE}_revision_finished_at_idx", "revision", "finished_at"),
    )


# The package's own copy, for its reads and writes (the same columns as the
# application's, whose metadata it must not depend on).
audit_table = define_audit_table(MetaData())
RUNNER_BOOTSTRAP = "bootstrap"
RUNNER_COMMAND_LINE = "command line"
RUNNER_UNRECORDED = "unrecorded earlier run"
RUNNER_OFFLINE = "offline sql"


def checksum_of_text(content: str) -> str:
    lines = content.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    normalised = "\n".join(line.rstrip(" \t") for line in lines).rstrip("\n") + "\n"
    return hashlib.sha256(normalised.encode()).hexdigest()


def checksum_of_file(path: str | Path) -> str:
    return checksum_of_text(Path(path).read_bytes().decode("utf-8"))


@dataclass
class AuditWriter:
    """Collects the steps of one Alembic run and writes their rows.

    Steps applied before the audit table exists (on a new database) are kept
    and written in the transaction that creates it, so the trail is complete
    from the first revision on. A run that retries (a revision that hit
    lock_timeout is rolled back and the command runs again from the revisions
    already committed) gives every attempt the same `waiting` list, so the
    steps of its earlier attempts are written as its own. When an earlier run applied the first revisions
    and died before the table existed (even right before the revision that
    creates it), those revisions are written too, marked
    as unrecorded (runner RUNNER_UNRECORDED, no checksum): the trail then still
    names every applied revision, and says which ones it cannot vouch for.
    """

    runner: str
    # The application's version, recorded with each step.
    app_version: str
    step_started: float = field(default_factory=time.time)
    waiting: list[dict[str, Any]] = field(default_factory=list)
    written_before: bool = False

    def restart_clock(self) -> None:
        """The first step starts now (not when env.py was loaded and connected)."""
        self.step_started = time.time()

    def on_version_apply(self, *, ctx: Any, step: MigrationInfo, heads: Any, run_args: Any) -> None:
        if not step.is_migration:
            return
        finished = time.time()
        self.waiting.append(self._row(step, self.step_started, finished))
        self.step_started = finished
        connection: Connection = ctx.connection
        if not connection.scalar(text(f"SELECT to_regclass('{audit_table.name}') IS NOT NULL")):
            return
        rows = self.waiting
        if (
            not self.written_before
            and rows[0]["direction"] == "upgrade"
            and self._trail_is_empty(connection)
        ):
            # The trail starts with this run: whatever lies below its first step
            # was applied by a run that had no table to write to (one killed
            # before this revision, or code older than the trail).
            rows = self._applied_by_earlier_runs(ctx.script, rows[0]["down_revisions"]) + rows
        connection.execute(insert(audit_table).values(database_user=func.current_user()), rows)
        self.written_before = True
        # Emptied in place: a retry's writer holds the same list.
        self.waiting.clear()

    @staticmethod
    def _trail_is_empty(connection: Connection) -> bool:
        return not connection.scalar(select(select(audit_table.c.id).limit(1).exists()))

    def _applied_by_earlier_runs(self, script: Any, parents: list[str]) -> list[dict[str, Any]]:
        """Rows for the revisions below this run's first step, oldest first."""
        from alembic.util import to_tuple

        if not parents or script is None:
            return []
        now = time.time()
        ancestors = reversed(list(script.revision_map.iterate_revisions(tuple(parents), "base")))
        return [
            _row(
                ancestor.revision,
                list(to_tuple(ancestor.down_revision, default=())),
                "upgrade",
                (now, now),
                RUNNER_UNRECORDED,
                self.app_version,
                checksum=None,
            )
            for ancestor in ancestors
        ]

    def _row(self, step: MigrationInfo, started: float, finished: float) -> dict[str, Any]:
        path = getattr(step.up_revision, "path", None)
        return _row(
            step.up_revision_id,
            list(step.down_revision_ids),
            "upgrade" if step.is_upgrade else "downgrade",
            (started, finished),
            self.runner,
            self.app_version,
            checksum=checksum_of_file(path) if path else None,
        )


def _row(
    revision: str | None,
    down_revisions: list[str],
    direction: str,
    times: tuple[float, float],
    runner: str,
    app_version: str,
    checksum: str | None,
) -> dict[str, Any]:
    """One audit row, written by this process on this host."""
    started, finished = times
    return {
        "revision": revision,
        "down_revisions": down_revisions,
        "direction": direction,
        "started_at": datetime.fromtimestamp(started, UTC),
        "finished_at": datetime.fromtimestamp(finished, UTC),
        "duration_seconds": round(finished - started, 6),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "app_version": app_version,
        "runner": runner,
        "checksum": checksum,
    }


def offline_row_sql(step: MigrationInfo, app_version: str, dialect: Dialect) -> str:
    """The SQL that writes `step`'s audit row when a rendered script runs (see
    the module's docstring), in `dialect` (the rendering's): a DO block, so that
    it plans the insert only when the audit table exists."""
    path = getattr(step.up_revision, "path", None)
    started, finished = func.now(), func.clock_timestamp()
    row = (
        insert(audit_table)
        .inline()
        .values(
            revision=step.up_revision_id,
            down_revisions=list(step.down_revision_ids),
            direction="upgrade" if step.is_upgrade else "downgrade",
            started_at=started,
            finished_at=finished,
            duration_seconds=func.extract("epoch", finished - started),
            host=func.coalesce(func.host(func.inet_client_addr()), "local socket"),
            pid=func.pg_backend_pid(),
            app_version=app_version,
            database_user=func.current_user(),
            runner=RUNNER_OFFLINE,
            checksum=checksum_of_file(path) if path else None,
        )
    )
    rendered = row.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
    return (
        f"DO $audit$ BEGIN IF to_regclass('{AUDIT_TABLE}') IS NOT NULL THEN {rendered}; "
        "END IF; END $audit$"
    )


def history_query(limit: int) -> Any:
    return (
        select(audit_table)
        .order_by(audit_table.c.finished_at.desc(), audit_table.c.id.desc())
        .limit(limit)
    )


def recorded_checksums_query() -> Any:
    """The checksum each revision had when it was last applied upward."""
    return (
        select(audit_table.c.revision, audit_table.c.checksum)
        .where(audit_table.c.direction == "upgrade")
        .ext(distinct_on(audit_table.c.revision))
        .order_by(audit_table.c.revision, audit_table.c.finished_at.desc(), audit_table.c.id.desc())
    )
