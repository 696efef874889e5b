"""A DBA's cancel stops the fleet's attempts, not one process's: the cancelled
revision is held, every process reports `held` instead of running it again,
and only an operator's `migrate --resume --reason` (recorded) lifts the hold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tests.support.configs import scenario_config
from tests.support.postgres import attempts, count_attempts, fetch_value, service_url
from tests.support.processes import ServiceProcess, run_python, service_environment, wait_for

pytestmark = pytest.mark.processes

SLOW = "test_slow"
CANCEL_MIGRATOR = """
SELECT pg_cancel_backend(pid) FROM pg_stat_activity
 WHERE datname = current_database()
   AND application_name LIKE 'platform-service migrator%' AND query LIKE '%pg_sleep%'
"""


def _environment(url: URL, slow_seconds: str) -> dict[str, str]:
    return service_environment(
        DATABASE_URL=service_url(url),
        ALEMBIC_CONFIG=str(scenario_config("slow")),
        TEST_SLOW_REVISION_SECONDS=slow_seconds,
        READINESS_POLL_INTERVAL="0.3",
        LOG_FORMAT="json",
    )


async def test_a_cancelled_revision_is_held_for_every_process_until_resumed(
    migrated_database: URL, tmp_path: Path
) -> None:
    await count_attempts(migrated_database)
    first = ServiceProcess.service(_environment(migrated_database, "120"), tmp_path / "first.log")
    second: ServiceProcess | None = None
    try:
        first.wait_for_phase("migrating")
        # Another replica starts meanwhile: it waits for the lock.
        second = ServiceProcess.uvicorn(
            _environment(migrated_database, "1"), tmp_path / "second.log", 2
        )
        second.wait_for_phase("waiting_for_lock")
        # The DBA cancels the migration that hurts production.
        assert await fetch_value(migrated_database, CANCEL_MIGRATOR) is True
        assert first.wait(60) == 4, first.logs()
        assert "cancelled" in first.logs()

        # The other replica does not run it again: both its workers report the hold.
        wait_for(
            lambda: len(second.pids_that_logged("not migrating: revision test_slow is held")) == 2,
            60,
            "both workers of the other replica to see the hold",
        )
        body = second.wait_for_phase("held")
        assert body["status"] == "unready"
        assert body["hold"]["revision"] == SLOW
        assert "pg_cancel_backend" in body["hold"]["reason"]
        assert "migrate --resume" in body["error"]
        assert await attempts(migrated_database) == 1
        status = run_python(
            "-m",
            "service",
            "db",
            "status",
            "--json",
            environment=_environment(migrated_database, "1"),
        )
        assert [hold["revision"] for hold in json.loads(status.stdout)["holds"]] == [SLOW]

        # Bad input changes nothing.
        for arguments in (
            ["--resume"],
            ["--reason", "no resume"],
            ["--resume", "--reason", "   "],
            # (an argument cannot hold NUL: the OS ends it there)
            ["--resume", "--reason", "escape\x1b[2J"],
            ["--resume", "--reason", "not utf-8 \udcff"],
            ["--resume", "--reason", "x" * 1001],
        ):
            refused = run_python(
                "-m",
                "service",
                "migrate",
                *arguments,
                environment=_environment(migrated_database, "1"),
            )
            assert refused.returncode == 2, (arguments, refused.stdout, refused.stderr)
        # A one-off migrate does not overrule the DBA either.
        refused = run_python(
            "-m", "service", "migrate", environment=_environment(migrated_database, "1")
        )
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "test_slow is held" in refused.stderr
        second.wait_for_phase("held")  # still held (it checks again every poll)
        assert await attempts(migrated_database) == 1

        resumed = run_python(
            "-m",
            "service",
            "migrate",
            "--resume",
            "--reason",
            "the report moved to a replica",
            "--operator",
            "dba-on-call",
            environment=_environment(migrated_database, "1"),
        )
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert "lifted the hold on test_slow" in resumed.stdout
        second.wait_for_phase("ready")
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert await fetch_value(migrated_database, "SELECT version_num FROM alembic_version") == SLOW
    lifted = await fetch_value(
        migrated_database,
        "SELECT row(revision, lifted_by, lift_reason)::text FROM schema_migration_holds",
    )
    assert lifted == '(test_slow,dba-on-call,"the report moved to a replica")'
    assert await attempts(migrated_database) == 2
