"""The service's own revisions, read from its scripts, so tests follow the history."""

from __future__ import annotations

from alembic_lockstep.scripts import load_revisions

from tests.support.processes import PROJECT_ROOT

_SCRIPTS = load_revisions(PROJECT_ROOT / "alembic.ini")
REVISIONS: list[str] = _SCRIPTS.pending(())
HEAD: str = REVISIONS[-1]
assert _SCRIPTS.heads == (HEAD,), "the service's history must have one head"
