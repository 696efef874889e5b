"""The migration audit trail, checksum verification and a database ahead of the code."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from alembic_lockstep.audit import checksum_of_file, checksum_of_text
from sqlalchemy.engine import URL

from service import __version__
from tests.support.configs import eventually, scenario_config, settings_for
from tests.support.postgres import connect
from tests.support.processes import PROJECT_ROOT, run_python
from tests.support.readiness import readiness, running_app, wait_for_phase
from tests.support.revisions import HEAD, REVISIONS

VERSIONS = PROJECT_ROOT / "alembic" / "versions"


def run(
    *arguments: str, url: URL, check: bool = True, **variables: str
) -> subprocess.CompletedProcess[str]:
    result = run_python(*arguments, url=url, environment=variables)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


async def audit_rows(url: URL) -> list[dict[str, object]]:
    connection = await connect(url)
    try:
        return [
            dict(row)
            for row in await connection.fetch("SELECT * FROM schema_migration_audit ORDER BY id")
        ]
    finally:
        await connection.close()


async def test_a_run_that_retries_records_its_earlier_attempts_as_its_own(
    empty_database: URL,
) -> None:
    """0007 builds an index CONCURRENTLY, which waits for every older snapshot
    in the database: behind one held open it hits lock_timeout and the run
    retries, after 0001-0006 committed and before the audit table (0009)
    existed. The steps of the first attempt are still the bootstrap's own
    (a fleet under load did this: its other workers' polls were the snapshots)."""
    blocker = await connect(empty_database)
    snapshot = blocker.transaction(isolation="repeatable_read")
    await snapshot.start()
    await blocker.fetchval("SELECT 1")
    try:
        async with running_app(settings_for(empty_database)) as client:

            async def retried() -> bool:
                _, body = await readiness(client)
                migration = body.get("migration") or {}
                return bool(migration.get("lock_timeout_retries"))

            await eventually(retried, within=120)
            await snapshot.rollback()
            await wait_for_phase(client, "ready")
    finally:
        await blocker.close()
    rows = await audit_rows(empty_database)
    assert [row["revision"] for row in rows] == REVISIONS
    assert {row["runner"] for row in rows} == {"bootstrap"}
    assert all(row["checksum"] for row in rows)


def file_of(revision: str) -> Path:
    (path,) = [p for p in VERSIONS.glob("*.py") if f'revision: str = "{revision}"' in p.read_text()]
    return path


async def test_bootstrap_records_every_step(empty_database: URL) -> None:
    async with running_app(settings_for(empty_database)) as client:
        await wait_for_phase(client, "ready")
    rows = await audit_rows(empty_database)
    assert [row["revision"] for row in rows] == REVISIONS
    parents: list[list[str]] = [[]] + [[revision] for revision in REVISIONS[:-1]]
    assert [row["down_revisions"] for row in rows] == parents
    for row in rows:
        assert row["direction"] == "upgrade"
        assert row["runner"] == "bootstrap"
        assert row["pid"] == os.getpid()
        assert row["host"]
        assert row["app_version"] == "0.1.0"
        assert row["database_user"] == empty_database.username
        assert row["checksum"] == checksum_of_file(file_of(str(row["revision"])))
        # Each revision did work on the server: it took time, which is its span.
        span = (row["finished_at"] - row["started_at"]).total_seconds()  # type: ignore[operator]
        assert float(row["duration_seconds"]) > 0  # type: ignore[arg-type]
        assert row["duration_seconds"] == pytest.approx(span, abs=2e-6)
    # One clock runs through the steps: each starts when the one before finished.
    for before, after in itertools.pairwise(rows):
        assert after["started_at"] == before["finished_at"]


@pytest.mark.processes
async def test_command_line_records_upgrades_and_downgrades(empty_database: URL) -> None:
    locking = str(scenario_config("locking"))
    run("-m", "alembic", "upgrade", "heads", url=empty_database, ALEMBIC_CONFIG=locking)
    run("-m", "alembic", "downgrade", "-1", url=empty_database, ALEMBIC_CONFIG=locking)
    rows = await audit_rows(empty_database)
    assert {row["runner"] for row in rows} == {"command line"}
    assert [(row["revision"], row["direction"]) for row in rows[-2:]] == [
        ("test_locking", "upgrade"),
        ("test_locking", "downgrade"),
    ]
    assert rows[-1]["down_revisions"] == [HEAD]

    history = json.loads(
        run("-m", "service", "db", "history", "--json", "--limit", "2", url=empty_database).stdout
    )
    assert [(step["revision"], step["direction"]) for step in history] == [
        ("test_locking", "downgrade"),
        ("test_locking", "upgrade"),
    ]
    text = run("-m", "service", "db", "history", url=empty_database).stdout
    assert f"{HEAD} <- test_locking" in text
    status = json.loads(run("-m", "service", "db", "status", "--json", url=empty_database).stdout)
    assert status["last_applied"][0]["revision"] == "test_locking"


def test_checksum_ignores_line_endings_and_trailing_blanks(tmp_path: Path) -> None:
    original = file_of(REVISIONS[0]).read_text()
    variants = {
        "crlf": original.replace("\n", "\r\n"),
        "cr": original.replace("\n", "\r"),
        "trailing": "\n".join(line + "  \t" for line in original.split("\n")) + "\n\n\n",
    }
    for name, content in variants.items():
        (tmp_path / name).write_bytes(content.encode())
        assert checksum_of_file(tmp_path / name) == checksum_of_text(original), name
    assert checksum_of_text(original.replace("create", "Create", 1)) != checksum_of_text(original)
    assert checksum_of_text(original + "# a comment\n") != checksum_of_text(original)


def _scenario_copy(folder: Path) -> Path:
    """The locking scenario in a folder of its own, so the test may edit its revision."""
    versions = folder / "versions"
    shutil.copytree(PROJECT_ROOT / "tests" / "scenarios" / "locking" / "versions", versions)
    config = folder / "alembic.ini"
    config.write_text(
        f"[alembic]\nscript_location = {PROJECT_ROOT / 'alembic'}\n"
        f"version_locations = {VERSIONS} {versions}\npath_separator = space\n"
    )
    return config


@pytest.mark.processes
async def test_a_revision_edited_after_it_ran_is_detected(
    empty_database: URL, tmp_path: Path
) -> None:
    config = _scenario_copy(tmp_path)
    run("-m", "service", "migrate", url=empty_database, ALEMBIC_CONFIG=str(config))
    clean = run("-m", "service", "db", "verify", url=empty_database, ALEMBIC_CONFIG=str(config))
    assert f"{len(REVISIONS) + 1} applied revisions match their files" in clean.stdout

    revision_file = tmp_path / "versions" / "locking_revision.py"
    revision_file.write_text(revision_file.read_text().replace("sa.Integer", "sa.BigInteger"))
    edited = run(
        "-m",
        "service",
        "db",
        "verify",
        "--json",
        url=empty_database,
        check=False,
        ALEMBIC_CONFIG=str(config),
    )
    assert edited.returncode == 1
    report = json.loads(edited.stdout)
    assert [entry["revision"] for entry in report["edited"]] == ["test_locking"]

    async with running_app(settings_for(empty_database, alembic_config=config)) as client:
        body = await wait_for_phase(client, "ready")
        assert "test_locking" in body["verification"]
    async with running_app(
        settings_for(empty_database, alembic_config=config, migration_verify="strict")
    ) as client:
        body = await wait_for_phase(client, "failed")
        assert "test_locking" in body["error"]
        assert "MIGRATION_VERIFY=strict" in body["error"]


@pytest.mark.processes
async def test_database_ahead_on_the_same_line_is_served(empty_database: URL) -> None:
    # A newer deploy (the locking scenario) migrated; this code is the older one.
    run(
        "-m",
        "service",
        "migrate",
        url=empty_database,
        ALEMBIC_CONFIG=str(scenario_config("locking")),
    )
    async with running_app(settings_for(empty_database)) as client:
        body = await wait_for_phase(client, "ready")
        assert body["schema_ahead"] is True
        assert body["current_revision"] == "test_locking"
    async with running_app(settings_for(empty_database, allow_schema_ahead=False)) as client:
        body = await wait_for_phase(client, "failed")
        assert "ALLOW_SCHEMA_AHEAD is false" in body["error"]


@pytest.mark.parametrize(
    ("parents", "verdict"),
    [([REVISIONS[-2]], "(diverged)"), (None, "(unknown)"), (["no_such_revision"], "(unknown)")],
)
async def test_database_on_another_branch_or_unknown_is_refused(
    migrated_database: URL, parents: list[str] | None, verdict: str
) -> None:
    connection = await connect(migrated_database)
    await connection.execute("UPDATE alembic_version SET version_num = 'other_branch_tip'")
    if parents is not None:
        await connection.execute(
            """
            INSERT INTO schema_migration_audit (revision, down_revisions, direction, started_at, finished_at,
                duration_seconds, host, pid, app_version, database_user, runner, checksum)
            VALUES ('other_branch_tip', $1, 'upgrade', now(), now(), 0, 'elsewhere', 1, '9.9.9', 'someone', 'bootstrap', NULL)
            """,
            parents,
        )
    await connection.close()
    async with running_app(settings_for(migrated_database)) as client:
        body = await wait_for_phase(client, "failed")
        assert "other_branch_tip" in body["error"]
        assert verdict in body["error"]
        assert body["status"] == "unready"


# The first run stops before the revision that creates the trail (as a
# migrator killed there would): its steps had nowhere to be written. Stopping
# right below that revision leaves the next run only the revision that creates
# the trail, which must still name the earlier ones.
@pytest.mark.parametrize(
    "stopped_after", [4, REVISIONS.index("0009_migration_audit")], ids=["middle", "just-below"]
)
@pytest.mark.processes
async def test_revisions_an_earlier_run_applied_before_the_trail_existed_are_marked_unrecorded(
    empty_database: URL, stopped_after: int
) -> None:
    run("-m", "alembic", "upgrade", REVISIONS[stopped_after - 1], url=empty_database)
    run("-m", "alembic", "upgrade", "head", url=empty_database)
    rows = await audit_rows(empty_database)
    assert [row["revision"] for row in rows] == REVISIONS
    earlier, later = rows[:stopped_after], rows[stopped_after:]
    assert {(row["runner"], row["checksum"]) for row in earlier} == {
        ("unrecorded earlier run", None)
    }
    assert all(row["runner"] == "command line" and row["checksum"] for row in later)
    verified = run("-m", "service", "db", "verify", url=empty_database, check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert (
        "applied before the audit trail existed: " + ", ".join(REVISIONS[:stopped_after])
        in verified.stdout
    )
    # The count says what the other applied revisions are (issue 27).
    assert (
        f"{len(REVISIONS) - stopped_after} applied revisions match their files; "
        f"{stopped_after} predate the audit trail (no checksum recorded)"
    ) in verified.stdout
    history = run("-m", "service", "db", "history", url=empty_database).stdout
    assert f"(version {__version__}, checksum" in history
    assert f"v{__version__}" not in history
