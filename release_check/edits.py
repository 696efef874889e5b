"""The previous release's revisions, unchanged or changed on the record.

A revision the previous release shipped has run in deployed databases, whose
audit trails hold its checksum: its file may change only with an entry in
alembic/edited.toml (alembic_lockstep/edits.py) that leads from the
release's checksum to the file's. Anything else fails the release check.
"""

from __future__ import annotations

from pathlib import Path

from alembic_lockstep import RecordedEdits, checksum_of_file, load_edits, load_revisions


def unrecorded_edits(
    repository: Path, release_code: Path, edits: RecordedEdits | None = None
) -> list[str]:
    """One line per revision of the release whose file is gone or differs
    without a record (`edits`, by default the repository's), naming both checksums."""
    shipped = load_revisions(release_code / "alembic.ini")
    current = load_revisions(repository / "alembic.ini")
    edits = edits if edits is not None else load_edits(repository / "alembic")
    problems = []
    for revision in shipped.applied(shipped.heads):
        if not current.is_known(revision):
            problems.append(f"{revision}: shipped by the release, gone from this code")
            continue
        old = checksum_of_file(shipped.path(revision))
        new = checksum_of_file(current.path(revision))
        if old != new and not edits.accepting(revision, old, new):
            problems.append(
                f"{revision}: changed since the release without a record in alembic/edited.toml "
                f"(from {old}, to {new})"
            )
    return problems
