"""Revisions edited after they shipped, accepted on the record: `alembic/edited.toml`.

A revision file applied in deployed databases must not change: its checksum
is in every audit trail, and verification (`db verify`, MIGRATION_VERIFY)
reports the difference. When one had to change (a step made re-runnable after
a crash), the change is accepted only on the record, as Flyway's `repair` and
Liquibase's `validCheckSum` do it: an entry here names the revision, the
checksum the audit trails hold, the file's checksum now, and why.

    [[edited]]
    revision = "0008_drop_cognito_sub"
    from = "87216cfb..."      # the checksum recorded when it ran (64 hex digits)
    to = "9604a137..."        # the file's checksum after the edit
    reason = "why it changed, and why databases that ran the old text are fine"

Verification then accepts a recorded `from` where the file has `to` (records
chain: from A to B, from B to C accepts A for C), and says so. A test (and
so CI) fails when a revision file of the previous release differs from that
release's without such an entry.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

EDITED_FILE = "edited.toml"
_CHECKSUM = re.compile("[0-9a-f]{64}")
_KEYS = {"revision", "from", "to", "reason"}


class EditRecordError(Exception):
    """The record of edited revisions is malformed, or an entry lacks a reason."""


@dataclass(frozen=True)
class RecordedEdit:
    revision: str
    old: str
    new: str
    reason: str


@dataclass(frozen=True)
class RecordedEdits:
    entries: tuple[RecordedEdit, ...] = ()

    def accepting(self, revision: str, recorded: str, current: str) -> list[RecordedEdit]:
        """The records that lead from `recorded` to `current` for `revision`
        (empty when none do)."""
        steps = {entry.old: entry for entry in self.entries if entry.revision == revision}
        path: list[RecordedEdit] = []
        checksum = recorded
        while checksum != current and checksum in steps and len(path) <= len(steps):
            path.append(steps[checksum])
            checksum = steps[checksum].new
        return path if checksum == current and path else []


def edits_path(script_location: str | Path) -> Path:
    return Path(script_location) / EDITED_FILE


def load_edits(script_location: str | Path) -> RecordedEdits:
    """The records beside the revisions (none when the file does not exist)."""
    path = edits_path(script_location)
    if not path.exists():
        return RecordedEdits()
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise EditRecordError(f"{path}: {error}") from error
    unknown = set(document) - {"edited"}
    if unknown:
        raise EditRecordError(f"{path}: unknown keys {', '.join(sorted(unknown))}")
    entries = document.get("edited", [])
    if not isinstance(entries, list):
        raise EditRecordError(f"{path}: 'edited' must be an array of tables ([[edited]])")
    return RecordedEdits(
        tuple(_entry(path, number, entry) for number, entry in enumerate(entries, 1))
    )


def _entry(path: Path, number: int, entry: object) -> RecordedEdit:
    where = f"{path}, entry {number}"
    if not isinstance(entry, dict) or set(entry) != _KEYS:
        raise EditRecordError(f"{where}: needs exactly {', '.join(sorted(_KEYS))}")
    if not all(isinstance(entry[key], str) for key in _KEYS):
        raise EditRecordError(f"{where}: every value must be a string")
    for key in ("from", "to"):
        if not _CHECKSUM.fullmatch(entry[key]):
            raise EditRecordError(f"{where}: '{key}' must be a SHA-256 checksum (64 hex digits)")
    if not entry["reason"].strip():
        raise EditRecordError(f"{where}: the reason must not be blank")
    return RecordedEdit(entry["revision"], entry["from"], entry["to"], entry["reason"])
