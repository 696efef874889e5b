"""The migration commands on an application's command line (argparse):

    migrate [--timeout S]                 migrate to head once, then exit
    migrate --resume --reason TEXT [--operator NAME]
                                          lift the holds on cancelled revisions, then migrate
    db status [--json]                    where the schema stands
    db history [--json] [--limit N]       the audit trail of applied steps
    db verify [--json]                    revisions edited after they ran?
    db heads [--write]                    the heads manifest up to date?
    db lint [REVISION...] [--json]        squawk on each revision's SQL (no database)

`add_commands` adds them to the application's subcommands; `needs_database`
tells which need one; `run_offline` and `run` run them.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from alembic_lockstep.config import MigrationConfig

_OFFLINE = {"heads", "lint"}


def add_commands(commands: Any) -> None:
    """Add `migrate` and `db ...` to the subcommands (`add_subparsers()`) of a parser."""
    add_migrate_arguments(commands.add_parser("migrate", help=HELP["migrate"]))
    database = commands.add_parser("db", help="database commands")
    database_commands = database.add_subparsers(dest="db_command", required=True)
    for name in ("status", "history", "verify", "heads", "lint"):
        parser = database_commands.add_parser(
            name, help=HELP[name], description=DESCRIPTIONS.get(name)
        )
        ARGUMENTS[name](parser)


HELP = {
    "migrate": "bring the schema to head once and exit (exit 1 on failure)",
    "status": "revision, heads, pending, lock holder",
    "history": "the audit trail of applied steps",
    "verify": "compare applied revisions with their recorded checksums (exit 1 if edited)",
    "heads": "check the heads manifest against the revision scripts (exit 1 if stale)",
    "lint": "lint each revision's SQL with squawk (exit 1 on a finding not accepted)",
}
DESCRIPTIONS = {
    "lint": "Render each revision's upgrade offline and lint it with squawk; "
    "findings are accepted, with a reason, only in accepted.toml beside the revisions.",
}


def add_migrate_arguments(migrate: argparse.ArgumentParser) -> None:
    migrate.add_argument(
        "--timeout", type=_seconds, default=None, help="give up (exit 1) after this many seconds"
    )
    migrate.add_argument(
        "--resume",
        action="store_true",
        help="lift the holds on revisions an operator cancelled (recorded), then migrate",
    )
    migrate.add_argument(
        "--reason", type=_text_of(MAX_REASON_LENGTH), help="why the hold is lifted (with --resume)"
    )
    migrate.add_argument(
        "--operator",
        type=_text_of(MAX_OPERATOR_LENGTH),
        help="who lifts it (with --resume; default: the OS user at this host)",
    )


def _add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")


def _add_history_arguments(history: argparse.ArgumentParser) -> None:
    _add_json(history)
    history.add_argument(
        "--limit", type=_positive, default=50, help="how many steps (newest first)"
    )


def _add_heads_arguments(heads: argparse.ArgumentParser) -> None:
    heads.add_argument("--write", action="store_true", help="rewrite the manifest")
    heads.add_argument(
        "--after", metavar="FILE", help="the revision file just written (Alembic's post-write hook)"
    )


def _add_lint_arguments(lint: argparse.ArgumentParser) -> None:
    lint.add_argument("revisions", nargs="*", metavar="REVISION", help="revisions (default: all)")
    _add_json(lint)
    lint.add_argument(
        "--accepted",
        type=Path,
        metavar="FILE",
        help="the accepted findings (default: accepted.toml beside the revisions)",
    )
    lint.add_argument(
        "--draft",
        type=Path,
        metavar="FILE",
        help="lint the revision in FILE, report only, exit 0 (Alembic's post-write hook)",
    )


# The arguments of each command but migrate, by name.
ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "status": _add_json,
    "history": _add_history_arguments,
    "verify": _add_json,
    "heads": _add_heads_arguments,
    "lint": _add_lint_arguments,
}


def _positive(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= _MOST_STEPS:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a whole number, 1 to {_MOST_STEPS}")
    return int(text)


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a number of seconds above 0")
    return seconds


# db history --limit: more steps than any history holds, well inside a bigint.
_MOST_STEPS = 1_000_000
MAX_REASON_LENGTH = 1000
MAX_OPERATOR_LENGTH = 128
# Control characters (NUL, which PostgreSQL refuses in text, among them) and
# lone surrogates (bytes that were not UTF-8): refused in recorded text.
_UNWRITABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")


def _text_of(limit: int) -> Callable[[str], str]:
    """An argument type for text kept in the holds table: not blank, at most
    `limit` characters, no control characters, valid UTF-8."""

    def checked(raw: str) -> str:
        if not raw.strip():
            raise argparse.ArgumentTypeError("must not be blank")
        if len(raw) > limit:
            raise argparse.ArgumentTypeError(f"must be at most {limit} characters")
        if _UNWRITABLE.search(raw):
            raise argparse.ArgumentTypeError(
                "must be UTF-8 text without control characters (NUL, escapes)"
            )
        return raw

    return checked


def is_migration_command(options: argparse.Namespace) -> bool:
    return getattr(options, "command", None) in {"migrate", "db"}


def needs_database(options: argparse.Namespace) -> bool:
    """False for the commands that read only the revision scripts (db heads, db lint)."""
    return not (options.command == "db" and options.db_command in _OFFLINE)


def run_offline(options: argparse.Namespace, alembic_config: Path, write_command: str) -> int:
    """`db heads` and `db lint`: the revision scripts only, no database."""
    if options.db_command == "heads":
        from alembic_lockstep.commands import heads_manifest

        return heads_manifest(alembic_config, write=options.write, write_command=write_command)
    from alembic_lockstep.lint import lint_command

    return lint_command(
        alembic_config,
        options.revisions,
        as_json=options.json,
        accepted=options.accepted,
        draft=options.draft,
    )


async def run(
    options: argparse.Namespace,
    config: MigrationConfig,
    application_engine: Callable[[], AsyncEngine],
) -> int:
    """`migrate` (on the migration URL) and `db status|history|verify` (on an
    engine of the application's, made by `application_engine`, disposed after)."""
    from alembic_lockstep import commands

    if options.command == "migrate":
        if options.resume != (options.reason is not None) or (
            options.operator is not None and not options.resume
        ):
            print(
                "error: --resume needs --reason (and --reason, --operator need --resume)",
                file=sys.stderr,
            )
            return 2
        resume = (options.operator, options.reason) if options.resume else None
        return await commands.migrate(config, options.timeout, resume=resume)
    engine = application_engine()
    try:
        if options.db_command == "history":
            return await commands.database_history(
                engine, as_json=options.json, limit=options.limit
            )
        if options.db_command == "verify":
            return await commands.database_verify(config, engine, as_json=options.json)
        return await commands.database_status(config, engine, as_json=options.json)
    finally:
        await engine.dispose()
