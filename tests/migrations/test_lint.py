"""`python -m service db lint`: squawk on the SQL each revision runs, run as the
command line runs it (a real process, the real squawk binary, no database)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.configs import scenario_config
from tests.support.processes import PROJECT_ROOT, run_python, service_environment
from tests.support.revisions import REVISIONS

# Every test here runs squawk or the service's command line as a process.
pytestmark = pytest.mark.processes

OUTAGES = scenario_config("lint_outages")
SAFE = scenario_config("lint_safe")


def lint(*arguments: str, config: Path | None = None) -> tuple[int, dict[str, Any]]:
    variables = {"ALEMBIC_CONFIG": str(config)} if config else {}
    result = run_python("-m", "service", "db", "lint", "--json", *arguments, environment=variables)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def findings_of(report: dict[str, Any], revision: str) -> list[dict[str, Any]]:
    (entry,) = [r for r in report["revisions"] if r["revision"] == revision]
    return entry["findings"]  # type: ignore[no-any-return]


def test_every_service_revision_is_clean_or_accepted_with_a_reason() -> None:
    status, report = lint()
    assert status == 0, report
    assert [entry["revision"] for entry in report["revisions"]] == REVISIONS
    assert report["stale_acceptances"] == []
    accepted = [f for entry in report["revisions"] for f in entry["findings"]]
    assert accepted, "0007 and 0008 have findings a reviewer accepted"
    assert all(f["accepted"] for f in accepted)
    assert {f["rule"] for f in findings_of(report, "0008_drop_cognito_sub")} == {"ban-drop-column"}


def test_a_data_migration_that_cannot_render_is_linted_on_what_it_renders_and_listed() -> None:
    _, report = lint("0006_auth_identity_backfill")
    (entry,) = report["revisions"]
    assert entry["rendered"] == "partially"
    assert "AttributeError" in entry["render_error"]
    assert entry["renders_partially"], "declared, with its reason, in alembic/accepted.toml"
    assert entry["statements"] > 0


@pytest.mark.parametrize(
    ("revision", "rule", "statement"),
    [
        ("outage_index", "require-concurrent-index-creation", "CREATE INDEX users_role_idx"),
        ("outage_not_null", "adding-required-field", "ADD COLUMN nickname TEXT NOT NULL"),
        ("outage_volatile_default", "adding-field-with-default", "DEFAULT gen_random_uuid()"),
        ("outage_column_type", "changing-column-type", "ALTER COLUMN position TYPE BIGINT"),
        ("outage_constraint", "constraint-missing-not-valid", "CHECK (position >= 0)"),
        ("outage_rename", "renaming-column", "RENAME description TO summary"),
    ],
)
def test_each_classic_outage_is_caught(revision: str, rule: str, statement: str) -> None:
    status, report = lint(revision, config=OUTAGES)
    assert status == 1
    (finding,) = findings_of(report, revision)
    assert (finding["rule"], finding["accepted"]) == (rule, None)
    assert statement in finding["statement"]


def test_the_safe_version_of_each_outage_passes() -> None:
    safe = ["safe_index", "safe_not_null", "safe_expand", "safe_constraint", "safe_validate"]
    status, report = lint(*safe, "safe_backfill", config=SAFE)
    assert status == 0, report
    assert [entry["revision"] for entry in report["revisions"]] == [*safe, "safe_backfill"]
    assert all(entry["findings"] == [] for entry in report["revisions"])
    backfill = report["revisions"][-1]
    assert backfill["rendered"] == "completely"
    assert "UPDATE users AS u SET token" in backfill["sql"], "the batch statement was linted"


def test_the_text_report_names_revision_statement_and_rule() -> None:
    result = run_python("-m", "service", "db", "lint", "outage_index", ALEMBIC_CONFIG=str(OUTAGES))
    assert result.returncode == 1
    assert "outage_index (tests/scenarios/lint_outages/versions/" in result.stdout
    assert "> CREATE INDEX users_role_idx ON users (role);" in result.stdout
    assert "NOT ACCEPTED: require-concurrent-index-creation" in result.stdout
    assert result.stdout.rstrip().endswith("FAILED")


def test_an_undeclared_render_failure_is_a_finding() -> None:
    status, report = lint("outage_unrenderable", config=OUTAGES)
    assert status == 1
    (finding,) = findings_of(report, "outage_unrenderable")
    assert finding["rule"] == "offline-render"
    assert "renders_partially" in finding["message"]


def test_squawk_comments_in_the_sql_are_refused() -> None:
    status, report = lint("outage_squawk_comment", config=OUTAGES)
    assert status == 1
    rules = {finding["rule"] for finding in findings_of(report, "outage_squawk_comment")}
    assert {"squawk-directive", "require-concurrent-index-creation"} <= rules


# What the service's alembic/accepted.toml turns off for every revision.
TIMEOUT_RULES = '[rules]\nrequire-lock-timeout = "set"\nrequire-statement-timeout = "set"\n'


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_finding_accepted_with_a_reason_passes(tmp_path: Path) -> None:
    accepted = write(
        tmp_path / "accepted.toml",
        TIMEOUT_RULES + '[revisions."outage_index".lint]\n'
        'require-concurrent-index-creation = "users is empty in this scenario"\n'
        '[revisions."outage_unrenderable"]\n'
        'renders_partially = "counts rows"\n',
    )
    arguments = ("outage_index", "outage_unrenderable", "--accepted", str(accepted))
    status, report = lint(*arguments, config=OUTAGES)
    assert status == 0, report
    (finding,) = findings_of(report, "outage_index")
    assert finding["accepted"] == "users is empty in this scenario"


def test_a_stale_acceptance_fails(tmp_path: Path) -> None:
    accepted = write(
        tmp_path / "accepted.toml",
        TIMEOUT_RULES
        + '[revisions."safe_index".lint]\nrequire-concurrent-index-creation = "no longer needed"\n'
        '[revisions."safe_expand"]\nrenders_partially = "it renders whole"\n'
        '[revisions."no_such_revision".lint]\nban-drop-column = "gone"\n',
    )
    status, report = lint("safe_index", "safe_expand", "--accepted", str(accepted), config=SAFE)
    assert status == 1
    stale = "\n".join(report["stale_acceptances"])
    assert "safe_index: rule 'require-concurrent-index-creation' is accepted" in stale
    assert "safe_expand: declared renders_partially but renders completely" in stale
    assert "'no_such_revision'" in stale


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('[revisions."outage_index".lint]\nrequire-concurrent-index-creation = ""\n', "reason"),
        ('[revisions."outage_index"]\naccepted = "x"\n', "unknown keys ['accepted']"),
        ('[rules]\nno-such-rule = "x"\n', "no-such-rule"),
        ("[rules\n", "not valid TOML"),
    ],
)
def test_a_bad_acceptance_file_is_refused_with_a_clear_error(
    tmp_path: Path, content: str, message: str
) -> None:
    accepted = write(tmp_path / "accepted.toml", content)
    result = run_python(
        "-m", "service", "db", "lint", "outage_index", "--accepted", str(accepted),
        ALEMBIC_CONFIG=str(OUTAGES),
    )  # fmt: skip
    assert result.returncode == 2
    assert message in result.stderr


def test_an_unknown_revision_is_refused() -> None:
    result = run_python("-m", "service", "db", "lint", "no_such_revision")
    assert result.returncode == 2
    assert "unknown revision 'no_such_revision'" in result.stderr


def test_alembic_revision_lints_the_new_draft_and_still_writes_it(tmp_path: Path) -> None:
    """The post-write hook of the real alembic.ini, on a copy of the scripts whose
    template drafts a non-concurrent index."""
    project = tmp_path / "project"
    shutil.copytree(PROJECT_ROOT / "alembic", project / "alembic")
    shutil.copy(PROJECT_ROOT / "alembic.ini", project / "alembic.ini")
    for shared in (".venv", "service", "settings.py"):
        (project / shared).symlink_to(PROJECT_ROOT / shared)
    template = project / "alembic" / "script.py.mako"
    template.write_text(
        template.read_text().replace(
            '${upgrades if upgrades else "pass"}',
            'op.create_index("users_role_idx", "users", ["role"])',
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "revision", "-m", "draft with an index"],
        cwd=project,
        env=service_environment(ALEMBIC_CONFIG=str(project / "alembic.ini")),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (draft,) = (project / "alembic" / "versions").glob("*draft_with_an_index.py")
    assert 'op.create_index("users_role_idx"' in draft.read_text()
    assert "NOT ACCEPTED: require-concurrent-index-creation" in result.stdout


def test_a_revision_file_that_does_not_parse_is_refused_with_its_error(tmp_path: Path) -> None:
    (tmp_path / "versions").mkdir()
    (tmp_path / "versions" / "broken.py").write_text(
        f'revision = "broken"\ndown_revision = "{REVISIONS[-1]}"\ndef upgrade(:\n'
    )
    config = write(
        tmp_path / "alembic.ini",
        f"[alembic]\nscript_location = {PROJECT_ROOT / 'alembic'}\n"
        f"version_locations = {PROJECT_ROOT / 'alembic' / 'versions'} {tmp_path / 'versions'}\n"
        "path_separator = space\n",
    )
    result = run_python("-m", "service", "db", "lint", ALEMBIC_CONFIG=str(config))
    assert result.returncode == 2
    assert "SyntaxError" in result.stderr
    assert "broken.py" in result.stderr
