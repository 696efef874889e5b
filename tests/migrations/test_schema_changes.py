"""Readiness stays true to the schema after ready: a downgrade on a serving
fleet takes every worker out of readiness (phase schema_changed) until the
schema is back at head; a schema moved ahead by a newer release keeps it
serving. And a process stopped while it only waited for the lock says so."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tests.support.configs import eventually, scenario_config, settings_for
from tests.support.postgres import service_url
from tests.support.processes import ServiceProcess, run_python, service_environment, wait_for
from tests.support.readiness import holding_lock, readiness, running_app, wait_for_phase
from tests.support.revisions import HEAD, REVISIONS

# Every test here starts a real process or server.
pytestmark = pytest.mark.processes

WORKERS = 2


async def test_a_downgrade_after_ready_turns_every_worker_unready_until_head_again(
    migrated_database: URL, tmp_path: Path
) -> None:
    environment = service_environment(
        DATABASE_URL=service_url(migrated_database), LOG_FORMAT="json", READINESS_POLL_INTERVAL="1"
    )
    process = ServiceProcess.service(environment, tmp_path / "fleet.log", "--workers", str(WORKERS))
    try:
        wait_for(lambda: len(process.pids_that_logged("schema at head")) == WORKERS, 60, "ready")
        downgraded = run_python("-m", "alembic", "downgrade", "-1", url=migrated_database)
        assert downgraded.returncode == 0, downgraded.stderr
        wait_for(
            lambda: len(process.pids_that_logged("no longer ready")) == WORKERS,
            30,
            "every worker to notice the downgrade",
        )
        status, body = process.readiness() or (0, {})
        assert status == 503
        assert body["phase"] == "schema_changed"
        assert (
            f"the database is at {REVISIONS[-2]}, behind this code's head {HEAD}" in body["error"]
        )
        refused = process.get("/v1/service")
        assert refused is not None
        assert refused.status_code == 503
        assert process.get("/livez").status_code == 200  # type: ignore[union-attr]

        migrated = run_python("-m", "service", "migrate", url=migrated_database)
        assert migrated.returncode == 0, migrated.stderr
        wait_for(
            lambda: len(process.pids_that_logged("the schema is back at")) == WORKERS,
            30,
            "every worker ready again",
        )
        status, body = process.readiness() or (0, {})
        assert (status, body["phase"], body["current_revision"]) == (200, "ready", HEAD)
    finally:
        process.stop()
    assert "Traceback" not in process.logs()


async def test_a_schema_moved_ahead_by_a_newer_release_keeps_serving(
    migrated_database: URL,
) -> None:
    async with running_app(settings_for(migrated_database)) as client:
        await wait_for_phase(client, "ready")
        newer = run_python(
            "-m", "service", "migrate", url=migrated_database,
            ALEMBIC_CONFIG=str(scenario_config("slow")), TEST_SLOW_REVISION_SECONDS="0",
        )  # fmt: skip
        assert newer.returncode == 0, newer.stderr

        async def noticed_ahead() -> dict[str, object] | None:
            status, body = await readiness(client)
            assert status == 200, body
            return body if body["schema_ahead"] else None

        body = await eventually(noticed_ahead)
        assert body["current_revision"] == "test_slow"


async def test_a_process_stopped_while_waiting_for_the_lock_rolled_nothing_back(
    empty_database: URL, tmp_path: Path
) -> None:
    async with holding_lock(empty_database):
        process = ServiceProcess.uvicorn(
            service_environment(DATABASE_URL=service_url(empty_database), LOG_FORMAT="json"),
            tmp_path / "waiter.log",
        )
        try:
            process.wait_for_phase("waiting_for_lock")
            process.signal(signal.SIGTERM)
            process.wait(30)
        finally:
            process.stop()
    logs = process.logs()
    assert "bootstrap stopped while waiting_for_lock" in logs
    assert "rolled back" not in logs
