"""A shipped revision that had to change is accepted on the record
(alembic/edited.toml), never silently: verification honours the record, the
release check fails on an edit without one, and strict verification refuses
an unrecorded edit before any revision is applied."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from alembic_lockstep.edits import EditRecordError, RecordedEdits, load_edits
from sqlalchemy.engine import URL

from release_check.edits import unrecorded_edits
from release_check.release import export, previous_release, resolve
from tests.support.postgres import fetch_value, service_url
from tests.support.processes import (
    PROCESS_OUTPUTS,
    PROJECT_ROOT,
    ServiceProcess,
    run_python,
    service_environment,
)
from tests.support.revisions import HEAD, REVISIONS

# The commit before 7cc4107, which edited the shipped revisions 0008 and 0012.
BEFORE_THE_EDITS = "7cc4107^"
EDITED = ["0008_drop_cognito_sub", "0012_config_item_types"]


@pytest.fixture(scope="module")
def release_before_the_edits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    commit = resolve(PROJECT_ROOT, BEFORE_THE_EDITS)
    return export(PROJECT_ROOT, commit, tmp_path_factory.mktemp("before-edits") / "code")


@pytest.mark.processes  # git
def test_the_edits_of_0008_and_0012_are_on_the_record(release_before_the_edits: Path) -> None:
    assert unrecorded_edits(PROJECT_ROOT, release_before_the_edits) == []
    found = unrecorded_edits(PROJECT_ROOT, release_before_the_edits, RecordedEdits())
    assert [line.split(":")[0] for line in found] == EDITED, found


@pytest.mark.processes  # git
def test_no_revision_of_the_previous_release_changed_without_a_record(tmp_path: Path) -> None:
    found = previous_release(PROJECT_ROOT)
    if found is None:
        pytest.skip("no earlier commit changed alembic/versions")
    code = export(PROJECT_ROOT, found[0], tmp_path / "release")
    assert unrecorded_edits(PROJECT_ROOT, code) == []


OLD, NEW = "a" * 64, "b" * 64


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (f'revision = "r"\nfrom = "{OLD}"\nto = "{NEW}"\nreason = " "', "blank"),
        (f'revision = "r"\nfrom = "abc"\nto = "{NEW}"\nreason = "x"', "SHA-256"),
        (f'revision = "r"\nfrom = "{OLD}"\nto = "{NEW}"', "needs exactly"),
        (
            f'revision = "r"\nfrom = "{OLD}"\nto = "{NEW}"\nreason = "x"\nextra = "y"',
            "needs exactly",
        ),
    ],
)
def test_a_record_without_what_it_needs_is_refused(
    tmp_path: Path, entry: str, problem: str
) -> None:
    (tmp_path / "edited.toml").write_text(f"[[edited]]\n{entry}\n")
    with pytest.raises(EditRecordError, match=problem):
        load_edits(tmp_path)


def test_records_chain_and_accept_nothing_else() -> None:
    a, b, c = "a" * 64, "b" * 64, "c" * 64
    edits = load_edits(PROJECT_ROOT / "alembic")
    assert edits.accepting("0008_drop_cognito_sub", a, b) == []
    chained = RecordedEdits(
        (
            *edits.entries,
            *(type(edits.entries[0])("r", old, new, "why") for old, new in ((a, b), (b, c))),
        )
    )
    assert [entry.new for entry in chained.accepting("r", a, c)] == [b, c]
    assert chained.accepting("r", c, a) == []
    assert chained.accepting("another", a, b) == []


@pytest.mark.processes
async def test_a_database_migrated_before_the_edits_upgrades_under_strict_to_ready(
    empty_database: URL, release_before_the_edits: Path, tmp_path: Path
) -> None:
    environment = service_environment(DATABASE_URL=service_url(empty_database))
    old = subprocess.run(
        [sys.executable, "-m", "service", "migrate"],
        cwd=release_before_the_edits,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    PROCESS_OUTPUTS.append(old.stdout + old.stderr)
    assert old.returncode == 0, old.stderr[-3000:]
    assert (
        await fetch_value(
            empty_database,
            "SELECT checksum FROM schema_migration_audit WHERE revision = '0012_config_item_types'",
        )
        == "e4a1302281080d73069f8fea36f5a4a3e97ef96ae405a20d0c8d7eeaa9818e2a"
    )

    strict = {**environment, "MIGRATION_VERIFY": "strict"}
    process = ServiceProcess.service(strict, tmp_path / "strict.log", "--workers", "2")
    try:
        body = process.wait_for_phase("ready", timeout=120)
        assert "edited on the record" in body["verification"], body
        assert body["current_revision"] == HEAD
    finally:
        process.stop()
    verified = run_python("-m", "service", "db", "verify", environment=strict)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "accepted on the record" in verified.stdout


@pytest.mark.processes
async def test_an_unrecorded_edit_is_refused_before_any_revision_is_applied(
    empty_database: URL, tmp_path: Path
) -> None:
    versions = tmp_path / "versions"
    shutil.copytree(PROJECT_ROOT / "alembic" / "versions", versions)
    config = tmp_path / "alembic.ini"
    config.write_text(
        "[alembic]\n"
        f"script_location = {PROJECT_ROOT / 'alembic'}\n"
        f"version_locations = {versions}\n"
        "path_separator = space\n"
    )
    environment = service_environment(
        DATABASE_URL=service_url(empty_database), ALEMBIC_CONFIG=str(config)
    )
    behind = REVISIONS[-2]
    migrated = run_python(
        "-m", "alembic", "-c", str(config), "upgrade", behind, environment=environment
    )
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    # Someone edits a shipped, applied revision, and records nothing.
    shipped = next(versions.glob("*_0003_*.py"))
    shipped.write_text(shipped.read_text() + "\n# an edit after it shipped\nEDITED = True\n")

    process = ServiceProcess.uvicorn(
        {**environment, "MIGRATION_VERIFY": "strict"}, tmp_path / "strict.log"
    )
    try:
        body = process.wait_for_phase("failed")
        assert body["failure"] == "edited_revision", body
        assert "0003" in body["error"], body
        assert process.wait(30) == 4
    finally:
        process.stop()
    # The refused start did not move the schema.
    version = await fetch_value(empty_database, "SELECT version_num FROM alembic_version")
    assert version == behind
