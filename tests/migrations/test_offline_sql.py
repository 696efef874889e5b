"""Offline SQL under a serving fleet: a DBA renders the next revisions with
`alembic upgrade A:B --sql` and applies them with psql while the previous
release serves. The rendered script writes the audit rows an online run
would, so the previous release places the schema "ahead on the same line" and
keeps serving; SQL applied without them leaves the schema ahead by revisions
the trail cannot place, which a serving process reports and keeps serving
(ALLOW_SCHEMA_AHEAD, the default) while a starting one stays unready."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from alembic_lockstep.audit import RUNNER_OFFLINE, checksum_of_file
from sqlalchemy.engine import URL

from tests.support.configs import TEST_SCENARIOS, scenario_config
from tests.support.postgres import connect, service_url
from tests.support.processes import ServiceProcess, run_python, service_environment, wait_for
from tests.support.revisions import HEAD

WORKERS = 2
# Two expand-only revisions of a test scenario on the service's head: a
# concurrently built index, then a column with a constant default.
NEXT = ("safe_index", "safe_not_null")
NEXT_FILES = {
    "safe_index": TEST_SCENARIOS / "lint_safe" / "versions" / "index_concurrently.py",
    "safe_not_null": TEST_SCENARIOS
    / "lint_safe"
    / "versions"
    / "not_null_with_constant_default.py",
}
# Probes answered in a row once every worker has seen the schema move.
WINDOW = 40
AHEAD_WARNING = "serving a schema ahead of this code"
# The audit statement of each revision in a rendered script (audit.py).
AUDIT_BLOCK = re.compile(r"^DO \$audit\$.*?\$audit\$;\n", re.MULTILINE | re.DOTALL)

pytestmark = pytest.mark.processes


def _render(tmp_path: Path) -> Path:
    rendered = run_python(
        "-m", "alembic", "-c", str(scenario_config("lint_safe")),
        "upgrade", f"{HEAD}:{NEXT[-1]}", "--sql",
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    script = tmp_path / "next.sql"
    script.write_text(rendered.stdout)
    return script


def _apply_with_psql(script: Path, database: URL) -> None:
    applied = run_python(
        "-m", "service", "psql", "-v", "ON_ERROR_STOP=1", "-q", "-f", str(script), url=database
    )
    assert applied.returncode == 0, applied.stdout + applied.stderr


def _serve_previous_release(database: URL, log: Path) -> ServiceProcess:
    """This code, which knows the service's head and not the scenario's revisions."""
    environment = service_environment(
        DATABASE_URL=service_url(database), LOG_FORMAT="json", READINESS_POLL_INTERVAL="0.2"
    )
    process = ServiceProcess.service(environment, log, "--workers", str(WORKERS))
    wait_for(lambda: len(process.pids_that_logged("schema at head")) == WORKERS, 90, "ready")
    return process


def _every_probe_ready(process: ServiceProcess) -> list[dict[str, object]]:
    bodies = []
    for _ in range(WINDOW):
        answer = process.readiness()
        assert answer is not None
        status, body = answer
        assert status == 200, body
        bodies.append(body)
    return bodies


async def test_a_rendered_script_applied_with_psql_keeps_the_previous_release_serving(
    migrated_database: URL, tmp_path: Path
) -> None:
    script = _render(tmp_path)
    assert len(AUDIT_BLOCK.findall(script.read_text())) == len(NEXT)
    previous = _serve_previous_release(migrated_database, tmp_path / "previous.log")
    try:
        _apply_with_psql(script, migrated_database)
        wait_for(
            lambda: len(previous.pids_that_logged(AHEAD_WARNING)) == WORKERS,
            30,
            "every worker to place the schema ahead on its line",
        )
        bodies = _every_probe_ready(previous)
        assert {(body["current_revision"], body["schema_ahead"]) for body in bodies} == {
            (NEXT[-1], True)
        }
        assert previous.pids_that_logged("no longer ready") == set()

        # A process of the previous release that starts now serves it too.
        starting = ServiceProcess.service(
            service_environment(DATABASE_URL=service_url(migrated_database), LOG_FORMAT="json"),
            tmp_path / "starting.log",
        )
        try:
            assert starting.wait_for_phase("ready", timeout=90)["schema_ahead"] is True
        finally:
            starting.stop()
    finally:
        previous.stop()

    connection = await connect(migrated_database)
    try:
        rows = await connection.fetch(
            "SELECT revision, down_revisions, runner, checksum, database_user, pid"
            " FROM schema_migration_audit WHERE revision = ANY($1::text[]) ORDER BY id",
            list(NEXT),
        )
        user = await connection.fetchval("SELECT current_user")
    finally:
        await connection.close()
    assert [(row["revision"], row["down_revisions"]) for row in rows] == [
        (NEXT[0], [HEAD]),
        (NEXT[1], [NEXT[0]]),
    ]
    for row in rows:
        assert row["runner"] == RUNNER_OFFLINE
        assert row["checksum"] == checksum_of_file(NEXT_FILES[row["revision"]])
        assert row["database_user"] == user
    verified = run_python("-m", "service", "db", "verify", url=migrated_database)
    assert verified.returncode == 0, verified.stdout + verified.stderr


async def test_sql_without_audit_rows_is_reported_but_keeps_a_serving_fleet_in_rotation(
    migrated_database: URL, tmp_path: Path
) -> None:
    script = _render(tmp_path)
    # As an older renderer, or SQL written by hand, would leave it.
    script.write_text(AUDIT_BLOCK.sub("", script.read_text()))
    previous = _serve_previous_release(migrated_database, tmp_path / "previous.log")
    try:
        _apply_with_psql(script, migrated_database)
        wait_for(
            lambda: len(previous.pids_that_logged(AHEAD_WARNING)) == WORKERS,
            30,
            "every worker to report the schema ahead",
        )
        bodies = _every_probe_ready(previous)
        for body in bodies:
            assert body["current_revision"] == NEXT[-1]
            assert body["schema_ahead"] is True
            assert "the audit trail does not lead from" in str(body["schema_ahead_unplaced"])
        assert previous.pids_that_logged("no longer ready") == set()

        # A process that starts on it has never served it: it stays unready.
        starting = ServiceProcess.service(
            service_environment(
                DATABASE_URL=service_url(migrated_database),
                LOG_FORMAT="json",
                MIGRATION_EXIT_ON_FAILURE="false",
            ),
            tmp_path / "starting.log",
        )
        try:
            body = starting.wait_for_phase("failed", timeout=90)
            assert body["failure"] == "unknown_revision"
            assert "(unknown)" in str(body["error"])
        finally:
            starting.stop()
    finally:
        previous.stop()
