"""What the audit trail says about the database and this code.

- Checksums: each applied revision's file is hashed again and compared with the
  checksum recorded when it ran; a difference means the file was edited after
  it ran.
- A database revision this code does not know: following the recorded
  `down_revisions` of the unknown revisions tells "ahead on the same line" (the
  code's head is among their ancestors: the code was rolled back after a newer
  deploy) from "diverged" (they descend from an older revision: another branch)
  and from "unknown" (the trail does not say).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncConnection

from alembic_lockstep.audit import audit_table, checksum_of_file, recorded_checksums_query
from alembic_lockstep.edits import load_edits
from alembic_lockstep.scripts import Revisions, ScriptFiles


@dataclass(frozen=True)
class EditedRevision:
    revision: str
    recorded: str
    current: str


@dataclass(frozen=True)
class AcceptedEdit:
    """An applied revision whose file differs from what ran, accepted on the
    record (edits.py): the entries that lead from one checksum to the other."""

    revision: str
    recorded: str
    current: str
    reasons: tuple[str, ...]


@dataclass
class Verification:
    """The result of comparing applied revisions with their files."""

    checked: list[str] = field(default_factory=list)
    edited: list[EditedRevision] = field(default_factory=list)
    accepted: list[AcceptedEdit] = field(default_factory=list)
    unrecorded: list[str] = field(default_factory=list)
    trail_missing: bool = False

    @property
    def ok(self) -> bool:
        return not self.edited

    def describe(self) -> str:
        if self.trail_missing:
            return "no audit trail in this database yet: nothing to verify"
        if not self.edited:
            matched = f"{len(self.checked)} applied revisions match their files"
            if self.accepted:
                names = ", ".join(entry.revision for entry in self.accepted)
                matched += (
                    f" ({len(self.accepted)} edited on the record, alembic/edited.toml: {names})"
                )
            if not self.unrecorded:
                return matched
            # Said, so that "7 match" on a database with 13 applied is not read
            # as 6 unchecked by mistake.
            return (
                f"{matched}; {len(self.unrecorded)} predate the audit trail (no checksum recorded)"
            )
        names = ", ".join(entry.revision for entry in self.edited)
        return f"revision files edited after they ran: {names}"


async def audit_trail_exists(connection: AsyncConnection) -> bool:
    exists = await connection.scalar(text(f"SELECT to_regclass('{audit_table.name}') IS NOT NULL"))
    return bool(exists)


async def verify_checksums(
    connection: AsyncConnection, revisions: Revisions | ScriptFiles, applied: Sequence[str]
) -> Verification:
    result = Verification()
    if not await audit_trail_exists(connection):
        result.trail_missing = True
        return result
    recorded = {
        row.revision: row.checksum for row in await connection.execute(recorded_checksums_query())
    }
    await connection.commit()
    current = await asyncio.to_thread(
        lambda: {r: checksum_of_file(revisions.path(r)) for r in applied}
    )
    edits = await asyncio.to_thread(load_edits, revisions.directory)
    for revision in applied:
        if recorded.get(revision) is None:
            result.unrecorded.append(revision)
            continue
        result.checked.append(revision)
        if recorded[revision] == current[revision]:
            continue
        records = edits.accepting(revision, recorded[revision], current[revision])
        if records:
            reasons = tuple(record.reason for record in records)
            result.accepted.append(
                AcceptedEdit(revision, recorded[revision], current[revision], reasons)
            )
        else:
            result.edited.append(EditedRevision(revision, recorded[revision], current[revision]))
    return result


class Lineage(StrEnum):
    AHEAD = "ahead"
    DIVERGED = "diverged"
    UNKNOWN = "unknown"


async def lineage_of_unknown(
    connection: AsyncConnection, revisions: Revisions, unknown: Sequence[str]
) -> tuple[Lineage, str]:
    """How unknown database revisions relate to this code's head, with the reason."""
    if not await audit_trail_exists(connection):
        return Lineage.UNKNOWN, "the database has no audit trail to tell where they come from"
    parents = await _recorded_parents(connection)
    heads = set(revisions.heads)
    for revision in unknown:
        known_ancestors = _nearest_known_ancestors(revision, parents, revisions)
        if known_ancestors is None:
            return (
                Lineage.UNKNOWN,
                f"the audit trail does not lead from {revision} to any revision this code knows",
            )
        if not known_ancestors <= heads:
            return Lineage.DIVERGED, (
                f"{revision} descends from {', '.join(sorted(known_ancestors))}, "
                f"not from this code's head {', '.join(sorted(heads))}: another branch"
            )
    return (
        Lineage.AHEAD,
        f"this code's head {', '.join(sorted(heads))} is an ancestor of {', '.join(unknown)}",
    )


async def _recorded_parents(connection: AsyncConnection) -> dict[str, list[str]]:
    query = (
        select(audit_table.c.revision, audit_table.c.down_revisions)
        .where(audit_table.c.direction == "upgrade")
        .ext(distinct_on(audit_table.c.revision))
        .order_by(audit_table.c.revision, audit_table.c.finished_at.desc())
    )
    rows = await connection.execute(query)
    parents = {row.revision: list(row.down_revisions) for row in rows}
    await connection.commit()
    return parents


def _nearest_known_ancestors(
    revision: str, parents: dict[str, list[str]], revisions: Revisions
) -> set[str] | None:
    """Known revisions first met walking down from `revision`; None if the trail breaks."""
    found: set[str] = set()
    frontier, seen = [revision], set()
    while frontier:
        current = frontier.pop()
        if current in seen:
            continue
        seen.add(current)
        if current != revision and revisions.is_known(current):
            found.add(current)
            continue
        if current not in parents:
            return None
        frontier.extend(parents[current])
    return found or None
