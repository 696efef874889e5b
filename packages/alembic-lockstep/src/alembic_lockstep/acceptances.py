"""Reviewed exceptions to the migration checks: `alembic/accepted.toml`.

The revision files already applied in deployed databases must never change
(their checksums are in every audit trail), so what a reviewer accepted about a
revision lives here, beside the revisions, where a pull request that adds a
revision shows it in the same diff. Every entry carries its reason:

    [rules]                                   # squawk rules applied to no revision
    prefer-text-field = "why"

    [revisions."0006_backfill"]
    renders_partially = "why its SQL cannot be rendered whole offline"
    previous_release = "why the release before it cannot run on its schema"

    [revisions."0006_backfill".lint]          # squawk findings accepted in this revision
    ban-drop-column = "why"

`python -m service db lint` fails on any finding not accepted here, and on any
entry here that no longer matches a finding (a stale acceptance hides nothing
but must not linger). The previous-release check skips the walk only when every
revision added since that release has a `previous_release` entry.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ACCEPTED_FILE = "accepted.toml"
_REVISION_KEYS = {"lint", "renders_partially", "previous_release"}


class AcceptanceFileError(Exception):
    """The accepted-findings file is missing a reason, malformed or misspelled."""


@dataclass(frozen=True)
class RevisionAcceptances:
    lint: dict[str, str] = field(default_factory=dict)
    renders_partially: str | None = None
    previous_release: str | None = None


@dataclass(frozen=True)
class Acceptances:
    path: Path | None = None
    disabled_rules: dict[str, str] = field(default_factory=dict)
    revisions: dict[str, RevisionAcceptances] = field(default_factory=dict)

    def of(self, revision: str) -> RevisionAcceptances:
        return self.revisions.get(revision, RevisionAcceptances())


def default_path(script_location: Path) -> Path:
    return script_location / ACCEPTED_FILE


def load_acceptances(path: Path) -> Acceptances:
    """Read and validate the file; a missing file accepts nothing."""
    if not path.exists():
        return Acceptances(path=None)
    try:
        content = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise AcceptanceFileError(f"{path}: not valid TOML: {error}") from None
    unknown = set(content) - {"rules", "revisions"}
    if unknown:
        raise AcceptanceFileError(f"{path}: unknown sections {sorted(unknown)}")
    return Acceptances(
        path=path,
        disabled_rules=_reasons(content.get("rules", {}), f"{path}: [rules]"),
        revisions={
            revision: _revision(entry, f'{path}: [revisions."{revision}"]')
            for revision, entry in _table(
                content.get("revisions", {}), f"{path}: [revisions]"
            ).items()
        },
    )


def _revision(entry: Any, where: str) -> RevisionAcceptances:
    table = _table(entry, where)
    unknown = set(table) - _REVISION_KEYS
    if unknown:
        raise AcceptanceFileError(
            f"{where}: unknown keys {sorted(unknown)} (expected {sorted(_REVISION_KEYS)})"
        )
    return RevisionAcceptances(
        lint=_reasons(table.get("lint", {}), f"{where}.lint"),
        renders_partially=_optional_reason(
            table.get("renders_partially"), f"{where} renders_partially"
        ),
        previous_release=_optional_reason(
            table.get("previous_release"), f"{where} previous_release"
        ),
    )


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise AcceptanceFileError(f"{where}: expected a table")
    return value


def _reasons(value: Any, where: str) -> dict[str, str]:
    return {key: _reason(reason, f"{where} {key}") for key, reason in _table(value, where).items()}


def _optional_reason(value: Any, where: str) -> str | None:
    return None if value is None else _reason(value, where)


def _reason(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise AcceptanceFileError(f"{where}: the reason must be a non-empty string")
    return value.strip()
