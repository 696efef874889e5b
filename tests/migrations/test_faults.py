"""Faults with real processes and signals: a killed migrator, SIGTERM mid-revision,
CREATE INDEX CONCURRENTLY with waiters, a failing revision, a database that is down."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import URL

from service.db.embedded import EmbeddedPostgres
from tests.support.api import create_account_over_http
from tests.support.configs import eventually, scenario_config, shared_folder
from tests.support.postgres import connect, service_url
from tests.support.processes import (
    OPERATOR_TOKEN,
    ServiceProcess,
    free_port,
    service_environment,
    wait_for,
)
from tests.support.revisions import HEAD

# Every test here starts a real process or server.
pytestmark = pytest.mark.processes


async def _state(url: URL) -> tuple[str | None, bool, int]:
    """(version, whether the slow revision's table exists, advisory locks held)."""
    connection = await connect(url)
    try:
        version = await connection.fetchval("SELECT version_num FROM alembic_version")
        marker = await connection.fetchval("SELECT to_regclass('slow_marker') IS NOT NULL")
        locks = await connection.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        return version, marker, locks
    finally:
        await connection.close()


def _slow_migrator(url: URL, log: Path, seconds: str = "60") -> ServiceProcess:
    environment = service_environment(
        DATABASE_URL=service_url(url),
        ALEMBIC_CONFIG=str(scenario_config("slow")),
        TEST_SLOW_REVISION_SECONDS=seconds,
    )
    return ServiceProcess.uvicorn(environment, log)


def _in_slow_revision(process: ServiceProcess) -> bool:
    answer = process.readiness()
    migration = answer[1].get("migration") if answer else None
    return bool(migration and migration["revision"] == "test_slow")


async def test_killed_migrator_frees_the_lock_and_leaves_no_half_revision(
    empty_database: URL, tmp_path: Path
) -> None:
    first = _slow_migrator(empty_database, tmp_path / "first.log")
    wait_for(lambda: _in_slow_revision(first), 60, "the slow revision to start")
    first.signal(signal.SIGKILL)
    first.wait()

    # The server notices the dead client within client_connection_check_interval.
    async def lock_freed() -> bool:
        return (await _state(empty_database))[2] == 0

    await eventually(lock_freed, within=30)
    version, marker, _ = await _state(empty_database)
    assert version == HEAD
    assert marker is False

    second = _slow_migrator(empty_database, tmp_path / "second.log", seconds="0.2")
    try:
        second.wait_for_phase("ready")
        assert await _state(empty_database) == ("test_slow", True, 0)
    finally:
        second.stop()


async def test_sigterm_during_a_revision_rolls_back_releases_and_exits_cleanly(
    empty_database: URL, tmp_path: Path
) -> None:
    migrator = _slow_migrator(empty_database, tmp_path / "migrator.log")
    wait_for(lambda: _in_slow_revision(migrator), 60, "the slow revision to start")
    migrator.signal(signal.SIGTERM)
    # uvicorn ends a graceful shutdown by re-raising the signal it caught.
    assert migrator.wait(30) in {0, -signal.SIGTERM}, migrator.logs()
    assert await _state(empty_database) == (HEAD, False, 0)
    logs = migrator.logs()
    assert "migration stopped" in logs
    assert "Application shutdown complete" in logs
    assert "Traceback" not in logs


async def test_create_index_concurrently_with_waiting_migrators(
    empty_database: URL, tmp_path: Path
) -> None:
    environment = service_environment(
        DATABASE_URL=service_url(empty_database),
        ALEMBIC_CONFIG=str(scenario_config("concurrent_index")),
        TEST_PAUSE_SECONDS="3",
    )
    migrators = [
        ServiceProcess(
            ["-m", "service", "migrate", "--timeout", "120"], environment, tmp_path / f"m{n}.log"
        )
        for n in range(3)
    ]
    codes = [migrator.wait(150) for migrator in migrators]
    logs = "\n".join(migrator.logs() for migrator in migrators)
    assert codes == [0, 0, 0], logs
    # The others really were waiting while the index was built.
    assert logs.count("waiting for the migration lock") >= 2, logs
    assert logs.count("applied revision test_concurrent_index") == 1, logs
    connection = await connect(empty_database)
    try:
        valid = await connection.fetchval(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'events_kind_idx'::regclass"
        )
        assert valid is True
        assert (
            await connection.fetchval("SELECT version_num FROM alembic_version")
            == "test_concurrent_index"
        )
    finally:
        await connection.close()


async def test_failed_migration_exits_non_zero_after_reporting(
    empty_database: URL, tmp_path: Path
) -> None:
    environment = service_environment(
        DATABASE_URL=service_url(empty_database), ALEMBIC_CONFIG=str(scenario_config("failing"))
    )
    process = ServiceProcess.uvicorn(environment, tmp_path / "failing.log")
    body = process.wait_for_phase("failed")
    assert "no_such_table" in body["error"]
    assert process.wait(30) == 4
    assert await _state(empty_database) == (HEAD, False, 0)

    kept = ServiceProcess.uvicorn(
        {**environment, "MIGRATION_EXIT_ON_FAILURE": "false"}, tmp_path / "kept.log"
    )
    try:
        kept.wait_for_phase("failed")
        wait_for(lambda: kept.process.poll() is None and kept.get("/livez"), 10, "still alive")
        assert kept.readiness()[0] == 503  # type: ignore[index]
    finally:
        kept.stop()


async def test_database_down_at_start_then_up(tmp_path: Path) -> None:
    with shared_folder() as folder:
        server = EmbeddedPostgres(folder / "late", port=free_port())
        url = server.start()  # initialise once, so its password is known
        server.stop()
        process = ServiceProcess.uvicorn(
            service_environment(DATABASE_URL=service_url(url), DATABASE_RETRY_MAX_INTERVAL="0.5"),
            tmp_path / "late.log",
        )
        try:
            body = process.wait_for_phase("waiting_for_database")
            assert "Connect" in body["error"] or "refused" in body["error"], body
            assert process.get("/livez").status_code == 200  # type: ignore[union-attr]
            assert process.get("/v1/service").status_code == 503  # type: ignore[union-attr]
            server.start()
            process.wait_for_phase("ready")
            # Served: past the readiness gate, at authentication.
            assert process.get("/v1/service").status_code == 401  # type: ignore[union-attr]
        finally:
            process.stop()
            server.stop()


OUTAGE_REQUESTS = 20


@pytest.mark.parametrize("pre_ping", ["false", "true"])
async def test_database_restart_while_serving(tmp_path: Path, pre_ping: str) -> None:
    """Requests get clean 503s while the database is down, readiness goes down
    and comes back, and the pool recovers without a process restart, whether
    pooled connections are pinged before use or not."""
    with shared_folder() as folder:
        server = EmbeddedPostgres(folder / "restarting", port=free_port())
        url = server.start()
        process = ServiceProcess.uvicorn(
            service_environment(
                DATABASE_URL=service_url(url),
                OPERATOR_TOKEN=OPERATOR_TOKEN,
                DATABASE_POOL_PRE_PING=pre_ping,
            ),
            tmp_path / "restart.log",
        )
        try:
            process.wait_for_phase("ready")
            key = create_account_over_http(process.port or 0, "Restart")
            assert _get_users(process, key).status_code == 200

            server.stop()
            refused = _get_users(process, key)
            assert refused.status_code == 503, refused.text
            # An outage is logged as its first 503 and then a count, not a
            # line a request.
            assert all(_get_users(process, key).status_code == 503 for _ in range(OUTAGE_REQUESTS))
            first_lines = [
                line
                for line in process.logs().splitlines()
                if "database error answered 503" in line and "more in the last" not in line
            ]
            # One a kind of error: a pooled connection found closed, a new one refused.
            assert 1 <= len(first_lines) <= 3, first_lines
            assert refused.headers["content-type"] == "application/vnd.api+json"
            assert refused.headers["retry-after"]
            assert refused.json()["errors"][0]["status"] == "503"
            readiness = process.get("/readyz")
            assert readiness is not None
            assert readiness.status_code == 503
            assert readiness.json()["database"] == "unreachable"
            assert process.get("/livez").status_code == 200  # type: ignore[union-attr]

            server.start()
            wait_for(
                lambda: (r := process.get("/readyz")) is not None and r.status_code == 200,
                60,
                "ready again",
            )
            assert _get_users(process, key).status_code == 200
            process.assert_running()
            assert "Traceback" not in process.logs()
        finally:
            process.stop()
            server.stop()


def _get_users(process: ServiceProcess, key: str) -> httpx.Response:
    return httpx.get(
        f"http://127.0.0.1:{process.port}/v1/users",
        headers={"Authorization": f"Bearer {key}"},
        timeout=15,
    )


async def test_frozen_lock_holder_is_waited_for_and_reported(
    empty_database: URL, tmp_path: Path
) -> None:
    holder = _slow_migrator(empty_database, tmp_path / "holder.log", seconds="3")
    waiter = None
    try:
        wait_for(lambda: _in_slow_revision(holder), 60, "the slow revision to start")
        holder.signal(signal.SIGSTOP)
        waiter = _slow_migrator(empty_database, tmp_path / "waiter.log", seconds="3")
        body = waiter.wait_for_phase("waiting_for_lock")
        assert f"pid={holder.pid}" in body["lock_holder"]["application_name"]
        assert waiter.get("/livez").status_code == 200  # type: ignore[union-attr]
        holder.signal(signal.SIGCONT)
        holder.wait_for_phase("ready")
        body = waiter.wait_for_phase("ready")
        assert body["migrated_here"] is False
        assert await _state(empty_database) == ("test_slow", True, 0)
    finally:
        holder.signal(signal.SIGCONT)
        holder.stop()
        if waiter is not None:
            waiter.stop()
