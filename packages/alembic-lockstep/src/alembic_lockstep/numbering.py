"""Numbered ids for drafted revisions: `alembic revision` names a new revision
`0012_<slug>` after `0011_...`, as the history is named, instead of Alembic's
random hex id. An id given with `--rev-id` is kept.

env.py passes `number_drafts` as Alembic's `process_revision_directives`.
"""

from __future__ import annotations

import re
from typing import Any

# Alembic's version table holds ids of up to 32 characters.
MAX_ID_LENGTH = 32
_NUMBERED = re.compile(r"^(\d+)_")
_WORD = re.compile(r"[a-z0-9]+")


def number_drafts(context: Any, revision: Any, directives: list[Any]) -> None:
    """Give each drafted revision the next number and a slug of its message."""
    options = context.config.cmd_opts
    if options is not None and getattr(options, "rev_id", None):
        return
    script_directory = context.script
    taken = {rev.revision for rev in script_directory.walk_revisions()}
    number = max((int(m.group(1)) for r in taken if (m := _NUMBERED.match(r))), default=0)
    for draft in directives:
        number += 1
        draft.rev_id = revision_id(number, draft.message)


def revision_id(number: int, message: str | None) -> str:
    """`0012_add_users_nickname`: the number, then as many whole words of the
    message (lower-case ASCII letters and digits) as fit in the version table."""
    prefix = f"{number:04d}_"
    words: list[str] = _WORD.findall((message or "").lower()) or ["revision"]
    slug = words[0][: MAX_ID_LENGTH - len(prefix)]
    for word in words[1:]:
        candidate = f"{slug}_{word}"
        if len(prefix) + len(candidate) > MAX_ID_LENGTH:
            break
        slug = candidate
    return prefix + slug
