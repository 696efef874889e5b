"""A replica is one unit to its probes: a worker whose migration failed for a
cause that can go away (here a report holding the table the revision alters)
serves again once the schema reaches head by another migrator, without a
restart, so no replica answers ready from one worker and 503 from another."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tests.support.configs import scenario_config
from tests.support.postgres import fetch_value, reading_configs, service_url
from tests.support.processes import ServiceProcess, run_python, service_environment, wait_for

pytestmark = pytest.mark.processes

WORKERS = 2
# Requests of the window after the first ready answer: each may reach either worker.
WINDOW = 60


def _start(shape: str, environment: dict[str, str], log: Path) -> ServiceProcess:
    if shape == "python -m service":
        return ServiceProcess.service(environment, log, "--workers", str(WORKERS))
    return ServiceProcess.uvicorn(environment, log, WORKERS)


@pytest.mark.parametrize("shape", ["python -m service", "uvicorn"])
async def test_workers_failed_on_lock_timeout_serve_once_another_process_reaches_head(
    migrated_database: URL, tmp_path: Path, shape: str
) -> None:
    environment = service_environment(
        DATABASE_URL=service_url(migrated_database),
        ALEMBIC_CONFIG=str(scenario_config("locking")),
        MIGRATION_EXIT_ON_FAILURE="false",
        MIGRATION_LOCK_TIMEOUT="0.1",
        MIGRATION_LOCK_RETRIES="0",
        # Longer than the test waits: the workers must not need their poll.
        READINESS_POLL_INTERVAL="300",
        # The window's requests carry no key: each is a failed authentication.
        RATE_LIMIT_AUTH_FAILURES="0",
        LOG_FORMAT="json",
    )
    process = _start(shape, environment, tmp_path / "replica.log")
    try:
        async with reading_configs(migrated_database):
            wait_for(
                lambda: len(process.pids_that_logged("migration failed (lock_timeout)")) == WORKERS,
                90,
                "both workers to fail on lock_timeout",
            )
        answer = process.readiness()
        assert answer is not None
        assert answer[0] == 503, answer
        assert answer[1]["phase"] == "failed", answer

        # The report ended; another process brings the schema to head.
        migrator = run_python(
            "-m", "service", "migrate", "--timeout", "60", environment=environment
        )
        assert migrator.returncode == 0, migrator.stdout + migrator.stderr
        assert (
            await fetch_value(migrated_database, "SELECT version_num FROM alembic_version")
            == "test_locking"
        )

        wait_for(lambda: (process.readiness() or (0,))[0] == 200, 30, "a ready answer")
        answers = []
        for _ in range(WINDOW):
            process.assert_running()
            readiness = process.readiness()
            api = process.get("/v1/service")
            answers.append((readiness[0] if readiness else None, api.status_code if api else None))
        assert all(ready == 200 for ready, _ in answers), answers
        # Past the readiness gate (no API key: 401), never 503.
        assert all(api == 401 for _, api in answers), answers
        failed = process.pids_that_logged("migration failed (lock_timeout)")
        assert failed <= process.pids_that_logged("schema at head"), process.logs()
    finally:
        process.stop()
