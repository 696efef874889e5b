"""`python -m service db lint`: squawk on the SQL each revision runs.

Each revision is rendered on its own by Alembic's offline mode (`--sql`),
through env.py, from its down revision(s) to itself, so the SQL keeps the
transaction structure it runs with (`transaction_per_migration`, autocommit
blocks: squawk sees a `CREATE INDEX CONCURRENTLY` inside or outside a
transaction as it really is). Alembic's own bookkeeping (the version table) is
left out. squawk (the `squawk-cli` package's binary) lints every revision's SQL
in one run; each finding is tied back to its revision and statement.

A revision whose Python cannot run without a database (a data migration that
reads rows, like a batched backfill) stops rendering part-way: what it rendered
is linted, and the revision must be declared `renders_partially` with a reason
in alembic/accepted.toml, or the render failure is itself a finding. A new data
migration can render whole by emitting its statement once when
`context.is_offline_mode()` is true.

Findings are accepted only in alembic/accepted.toml (alembic_lockstep/acceptances.py):
squawk's own `-- squawk-ignore` comments in a revision's SQL are refused, so
that every acceptance is in the one reviewed place.
"""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alembic_lockstep.acceptances import (
    AcceptanceFileError,
    Acceptances,
    default_path,
    load_acceptances,
)
from alembic_lockstep.scripts import VERSION_TABLE, alembic_config

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import Script, ScriptDirectory

# The oldest PostgreSQL the service supports (docs/operations/bootstrap.md): squawk judges what is
# safe by version (a constant default is catalog-only from 11 on, for example).
POSTGRES_VERSION = "14"
# Checks of our own, reported like squawk's rules.
RENDER_RULE = "offline-render"
DIRECTIVE_RULE = "squawk-directive"

# Alembic's version table and the audit row each revision writes (audit.py).
_BOOKKEEPING = re.compile(
    rf"^(CREATE TABLE|INSERT INTO|UPDATE|DELETE FROM) {VERSION_TABLE}\b|^DO \$audit\$",
    re.IGNORECASE,
)
_DIRECTIVE = re.compile(r"(--|/\*)\s*squawk-", re.IGNORECASE)


class LintError(Exception):
    """The lint could not run: squawk missing or failing, a bad argument or file."""


@dataclass(frozen=True)
class Statement:
    sql: str
    first_line: int
    last_line: int


@dataclass
class Rendering:
    """What one revision's upgrade renders offline, statement by statement."""

    revision: str
    path: str
    statements: list[Statement] = field(default_factory=list)
    error: str | None = None

    @property
    def sql(self) -> str:
        return "".join(statement.sql + "\n\n" for statement in self.statements)

    def add(self, sql: str) -> None:
        first = self.statements[-1].last_line + 2 if self.statements else 0
        self.statements.append(Statement(sql, first, first + sql.count("\n")))

    def statement_at(self, line: int) -> tuple[str, int]:
        """The statement holding a line of `sql`, and that line's number within it."""
        for statement in self.statements:
            if statement.first_line <= line <= statement.last_line:
                return statement.sql, line - statement.first_line + 1
        return "", 1


@dataclass(frozen=True)
class Finding:
    revision: str
    rule: str
    message: str
    help: str | None
    statement: str
    # The line of the statement squawk points at (1 = its first).
    line: int = 1
    accepted: str | None = None

    def as_json(self) -> dict[str, Any]:
        return vars(self).copy()


@dataclass
class RevisionReport:
    revision: str
    path: str
    statements: int
    findings: list[Finding]
    # The SQL squawk linted, as rendered (without Alembic's version bookkeeping).
    sql: str = ""
    render_error: str | None = None
    renders_partially: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "path": self.path,
            "statements": self.statements,
            "rendered": "partially" if self.render_error else "completely",
            "render_error": self.render_error,
            "renders_partially": self.renders_partially,
            "findings": [finding.as_json() for finding in self.findings],
            "sql": self.sql,
        }


@dataclass
class LintReport:
    revisions: list[RevisionReport]
    stale_acceptances: list[str]
    disabled_rules: dict[str, str]
    accepted_file: str | None

    @property
    def unaccepted(self) -> list[Finding]:
        return [f for r in self.revisions for f in r.findings if f.accepted is None]

    @property
    def ok(self) -> bool:
        return not self.unaccepted and not self.stale_acceptances

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "accepted_file": self.accepted_file,
            "disabled_rules": self.disabled_rules,
            "revisions": [revision.as_json() for revision in self.revisions],
            "stale_acceptances": self.stale_acceptances,
        }

    def describe(self) -> str:
        lines = [line for revision in self.revisions for line in _describe_revision(revision)]
        lines += [f"stale acceptance: {stale}" for stale in self.stale_acceptances]
        findings = sum(len(revision.findings) for revision in self.revisions)
        partial = sum(1 for revision in self.revisions if revision.render_error)
        lines.append(
            f"{len(self.revisions)} revisions linted, {findings} findings "
            f"({findings - len(self.unaccepted)} accepted), {partial} rendered partially, "
            f"{len(self.stale_acceptances)} stale acceptances: {'OK' if self.ok else 'FAILED'}"
        )
        return "\n".join(lines)


def _describe_revision(report: RevisionReport) -> Iterator[str]:
    unaccepted = [finding for finding in report.findings if finding.accepted is None]
    yield (
        f"{report.revision} ({report.path}): {report.statements} statements; findings: "
        f"{len(report.findings) - len(unaccepted)} accepted, {len(unaccepted)} not accepted"
    )
    if report.render_error:
        declared = "declared" if report.renders_partially else "NOT DECLARED"
        yield f"  rendered partially ({declared}), stopped by {report.render_error}"
    for finding in report.findings:
        if finding.accepted:
            first_line = finding.statement.splitlines()[0] if finding.statement else ""
            yield f"  accepted: {finding.rule}: {first_line[:90]}"
    by_statement: dict[str, list[Finding]] = {}
    for finding in unaccepted:
        by_statement.setdefault(finding.statement, []).append(finding)
    for statement, findings in by_statement.items():
        flagged = {finding.line for finding in findings}
        for number, line in enumerate(statement.splitlines(), start=1):
            yield f"  {'>' if number in flagged else '|'} {line}"
        for finding in findings:
            yield f"    NOT ACCEPTED: {finding.rule}: {finding.message}"
            if finding.help:
                yield f"      help: {finding.help}"


def lint(
    config_path: Path, revisions: Sequence[str] = (), accepted_path: Path | None = None
) -> LintReport:
    """Lint the given revisions (all when none are given), oldest first."""
    config = alembic_config(config_path, configure_logging=False)
    script = _script_directory(config)
    scripts = _select(script, revisions)
    acceptances = _load(accepted_path or default_path(Path(script.dir)))
    renderings = [_render(config, script, revision) for revision in scripts]
    found = _run_squawk(renderings, acceptances.disabled_rules)
    reports = [
        _revision_report(rendering, findings, acceptances)
        for rendering, findings in zip(renderings, found, strict=True)
    ]
    known = {revision.revision for revision in script.walk_revisions()}
    return LintReport(
        revisions=reports,
        stale_acceptances=_stale(reports, acceptances, known),
        disabled_rules=acceptances.disabled_rules,
        accepted_file=str(acceptances.path) if acceptances.path else None,
    )


def revision_in_file(config_path: Path, path: Path) -> str:
    """The revision id of a revision script (the draft `alembic revision` just wrote)."""
    script = _script_directory(alembic_config(config_path))
    for revision in script.walk_revisions():
        if Path(revision.path).resolve() == path.resolve():
            return revision.revision
    raise LintError(f"{path} is not one of the revision scripts")


def _script_directory(config: Config) -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    try:
        script = ScriptDirectory.from_config(config)
        script.get_heads()  # reads every revision file now: a broken one is reported here
    except Exception as error:  # a revision file is Python: anything can be wrong in it
        raise LintError(
            f"cannot read the revision scripts: {type(error).__name__}: {error}"
        ) from None
    return script


def _select(script: ScriptDirectory, wanted: Sequence[str]) -> list[Script]:
    from alembic.util.exc import CommandError

    everything = list(reversed(list(script.walk_revisions())))
    if not wanted:
        return everything
    chosen: set[str] = set()
    for name in wanted:
        try:
            found = script.get_revision(name)
        except CommandError as error:
            raise LintError(f"unknown revision {name!r}: {error}") from None
        if found is None:
            raise LintError(f"unknown revision {name!r}")
        chosen.add(found.revision)
    return [revision for revision in everything if revision.revision in chosen]


def _load(path: Path) -> Acceptances:
    try:
        return load_acceptances(path)
    except AcceptanceFileError as error:
        raise LintError(str(error)) from None


class _Recorder(io.StringIO):
    """Alembic's offline mode writes each statement in one call: keep them apart."""

    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[str] = []

    def write(self, text: str) -> int:
        self.chunks.append(text)
        return len(text)


def _render(config: Config, script: ScriptDirectory, revision: Script) -> Rendering:
    from alembic.runtime.environment import EnvironmentContext
    from alembic.util import to_tuple

    recorder = _Recorder()
    config.output_buffer = recorder
    parents = to_tuple(revision.down_revision, default=())
    rendering = Rendering(revision.revision, _relative(revision.path))
    with _quiet_alembic():
        try:
            # What `alembic upgrade PARENT:REVISION --sql` does, with the script
            # directory parsed once for all revisions, and merges (several parents) too.
            with EnvironmentContext(
                config,
                script,
                fn=lambda heads, _: script._upgrade_revs(revision.revision, heads),
                as_sql=True,
                starting_rev=parents if parents else "base",
                destination_rev=revision.revision,
            ):
                script.run_env()
        except Exception as error:  # the revision's own Python: anything can fail offline
            rendering.error = f"{type(error).__name__}: {error}"
    for chunk in recorder.chunks:
        sql = chunk.strip()
        if sql and not _BOOKKEEPING.match(sql):
            rendering.add(sql)
    if rendering.error and _transaction_open(rendering):
        # Rendering stopped inside a transaction that Alembic would have
        # committed; close it, or squawk reports the stop as a finding.
        rendering.add("COMMIT;")
    return rendering


def _transaction_open(rendering: Rendering) -> bool:
    depth = 0
    for statement in rendering.statements:
        keyword = statement.sql.rstrip(";").strip().upper()
        if keyword == "BEGIN":
            depth += 1
        elif keyword in ("COMMIT", "ROLLBACK"):
            depth = max(0, depth - 1)
    return depth > 0


@contextmanager
def _quiet_alembic() -> Iterator[None]:
    """Alembic logs every rendered step at INFO; the report says what matters."""
    logger = logging.getLogger("alembic")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _relative(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return path


def squawk_binary() -> str:
    installed = Path(sysconfig.get_path("scripts")) / "squawk"
    if installed.exists():
        return str(installed)
    found = shutil.which("squawk")
    if found is None:
        raise LintError(
            "squawk is not installed: install the development requirements (squawk-cli)"
        )
    return found


def _run_squawk(
    renderings: list[Rendering], disabled: dict[str, str]
) -> list[list[dict[str, Any]]]:
    """Lint every rendering in one squawk run; squawk's findings per rendering."""
    with tempfile.TemporaryDirectory(prefix="migration-lint-") as folder:
        directory = Path(folder)
        files = [directory / f"{index}.sql" for index in range(len(renderings))]
        for file, rendering in zip(files, renderings, strict=True):
            file.write_text(rendering.sql, encoding="utf-8")
        # An explicit configuration, so no .squawk.toml found elsewhere applies.
        config = directory / "squawk.toml"
        config.write_text(
            f"excluded_rules = {json.dumps(sorted(disabled))}\n"
            f'pg_version = "{POSTGRES_VERSION}"\n'
            "assume_in_transaction = false\n"
        )
        raw = _squawk_json(config, files, directory) if files else []
    by_file: dict[str, list[dict[str, Any]]] = {file.name: [] for file in files}
    for finding in raw:
        by_file[Path(finding["file"]).name].append(finding)
    return [by_file[file.name] for file in files]


def _squawk_json(config: Path, files: list[Path], directory: Path) -> list[dict[str, Any]]:
    command = [squawk_binary(), "--config", str(config), "--reporter", "json"]
    result = subprocess.run(
        [*command, *map(str, files)],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        findings = json.loads(result.stdout)
    except json.JSONDecodeError:
        findings = None
    if result.returncode not in (0, 1) or not isinstance(findings, list):
        output = (result.stdout + result.stderr).strip()
        raise LintError(f"squawk failed (exit {result.returncode}): {output}")
    return findings


def _revision_report(
    rendering: Rendering, raw: list[dict[str, Any]], acceptances: Acceptances
) -> RevisionReport:
    accepted = acceptances.of(rendering.revision)
    findings = [
        Finding(
            revision=rendering.revision,
            rule=item["rule_name"],
            message=item["message"],
            help=item.get("help"),
            statement=statement,
            line=line,
            accepted=accepted.lint.get(item["rule_name"]),
        )
        for item in raw
        for statement, line in [rendering.statement_at(item["line"])]
    ]
    findings += [
        Finding(
            rendering.revision,
            DIRECTIVE_RULE,
            "a squawk comment in the revision's SQL: accept findings in alembic/accepted.toml",
            None,
            statement.sql,
            accepted=accepted.lint.get(DIRECTIVE_RULE),
        )
        for statement in rendering.statements
        if _DIRECTIVE.search(statement.sql)
    ]
    if rendering.error and not accepted.renders_partially:
        findings.append(
            Finding(
                rendering.revision,
                RENDER_RULE,
                f"the revision cannot be rendered offline ({rendering.error}): make it render "
                "(see `context.is_offline_mode()`) or declare `renders_partially` with a reason",
                None,
                "",
            )
        )
    return RevisionReport(
        revision=rendering.revision,
        path=rendering.path,
        statements=len(rendering.statements),
        findings=findings,
        sql=rendering.sql,
        render_error=rendering.error,
        renders_partially=accepted.renders_partially,
    )


def _stale(reports: list[RevisionReport], acceptances: Acceptances, known: set[str]) -> list[str]:
    stale = [
        f"revision {revision!r} in {acceptances.path} is not one of the revision scripts"
        for revision in sorted(set(acceptances.revisions) - known)
    ]
    for report in reports:
        accepted = acceptances.of(report.revision)
        found = {finding.rule for finding in report.findings}
        stale += [
            f"{report.revision}: rule {rule!r} is accepted but squawk no longer finds it"
            for rule in sorted(set(accepted.lint) - found)
        ]
        if accepted.renders_partially and not report.render_error:
            stale.append(f"{report.revision}: declared renders_partially but renders completely")
    return stale


def lint_command(
    config_path: Path,
    revisions: Sequence[str],
    *,
    as_json: bool,
    accepted: Path | None,
    draft: Path | None,
) -> int:
    """The command: 0 when every finding is accepted, 1 otherwise, 2 when it cannot run.

    With `draft` (Alembic's post-write hook) it lints that new revision, prints
    what it found, and returns 0: a draft is written to be reviewed and edited.
    """
    try:
        if draft is not None:
            revisions = [revision_in_file(config_path, draft)]
        report = lint(config_path, revisions, accepted)
    except LintError as error:
        print(f"error: {error}", file=sys.stderr)
        return 0 if draft is not None else 2
    print(json.dumps(report.as_json(), indent=2) if as_json else report.describe())
    if draft is not None:
        return 0
    return 0 if report.ok else 1
