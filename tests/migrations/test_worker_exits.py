"""A failed migration stops a multi-worker server under every supervisor it runs
with: `python -m service --workers N` (the image's entry point), `uvicorn
--workers N`, gunicorn with uvicorn workers. One attempt per worker at most, no
restart loop; with MIGRATION_EXIT_ON_FAILURE=false the workers stay up, unready.
Invalid settings stop them too. And workers die with their supervisor."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tests.support.configs import scenario_config, shared_folder
from tests.support.embedded import serve
from tests.support.postgres import attempts, count_attempts, service_url
from tests.support.processes import (
    ServiceProcess,
    free_port,
    port_free,
    process_alive,
    service_environment,
    wait_for,
)

# Every test here starts a real process or server.
pytestmark = pytest.mark.processes

WORKERS = 2
# uvicorn's supervisor restarting a worker says so; none may be restarted.
RESTARTED = "died"


def _failing(url: URL, **variables: str) -> dict[str, str]:
    return service_environment(
        DATABASE_URL=service_url(url),
        ALEMBIC_CONFIG=str(scenario_config("failing")),
        LOG_FORMAT="json",
        **variables,
    )


def _assert_stopped_after_failing(process: ServiceProcess) -> None:
    logs = process.logs()
    assert RESTARTED not in logs, logs
    assert process.pids_that_logged("migration failed"), logs
    assert port_free(process.port or 0), "a worker still holds the port"


async def test_a_fleet_of_python_m_service_exits_4_with_one_attempt_per_worker(
    migrated_database: URL, tmp_path: Path
) -> None:
    await count_attempts(migrated_database)
    fleet = [
        ServiceProcess.service(
            _failing(migrated_database), tmp_path / f"replica-{n}.log", "--workers", str(WORKERS)
        )
        for n in range(2)
    ]
    try:
        codes = [process.wait(60) for process in fleet]
    finally:
        for process in fleet:
            process.stop()
    assert codes == [4, 4], [process.logs() for process in fleet]
    for process in fleet:
        _assert_stopped_after_failing(process)
        assert "exiting with status 4: the migration failed (worker" in process.logs()
    assert 2 <= await attempts(migrated_database) <= 2 * WORKERS


async def test_uvicorn_with_workers_stops_instead_of_restarting_them(
    migrated_database: URL, tmp_path: Path
) -> None:
    await count_attempts(migrated_database)
    process = ServiceProcess.uvicorn(_failing(migrated_database), tmp_path / "u.log", WORKERS)
    # uvicorn's supervisor itself exits 0 when it stops on a worker's startup failure.
    assert process.exit_status() == 0, process.logs()
    _assert_stopped_after_failing(process)
    assert "failed to start, stopping the parent process" in process.logs()
    assert 1 <= await attempts(migrated_database) <= WORKERS


async def test_gunicorn_halts_with_status_4(migrated_database: URL, tmp_path: Path) -> None:
    await count_attempts(migrated_database)
    process = ServiceProcess.gunicorn(_failing(migrated_database), tmp_path / "g.log", WORKERS)
    assert process.exit_status() == 4, process.logs()
    assert "App failed to load" in process.logs()
    assert process.pids_that_logged("migration failed"), process.logs()
    assert 1 <= await attempts(migrated_database) <= WORKERS


async def test_without_exit_on_failure_the_workers_stay_up_and_unready(
    migrated_database: URL, tmp_path: Path
) -> None:
    await count_attempts(migrated_database)
    environment = _failing(migrated_database, MIGRATION_EXIT_ON_FAILURE="false")
    process = ServiceProcess.service(environment, tmp_path / "kept.log", "--workers", str(WORKERS))
    try:
        wait_for(
            lambda: len(process.pids_that_logged("migration failed")) == WORKERS,
            60,
            "every worker to fail",
        )
        # Ask enough times to reach both workers: each is up, unready, and says why.
        for _ in range(10):
            process.assert_running()
            answer = process.readiness()
            assert answer is not None
            assert answer[0] == 503
            assert answer[1]["phase"] == "failed"
            assert "no_such_table" in answer[1]["error"]
            assert process.get("/livez").status_code == 200  # type: ignore[union-attr]
            refused = process.get("/v1/configs")
            assert refused is not None
            assert refused.status_code == 503
            detail = refused.json()["errors"][0]["detail"]
            assert detail.startswith("the service is not serving: its database migration failed")
        process.assert_running()
    finally:
        process.stop()
    assert RESTARTED not in process.logs()
    assert await attempts(migrated_database) == WORKERS


def test_workers_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    """With the embedded PostgreSQL: the next start gets the port."""
    with shared_folder() as folder:
        first = serve(folder, tmp_path / "first.log", "--workers", str(WORKERS))
        workers: set[int] = set()
        try:
            wait_for(
                lambda: len(first.pids_that_logged("schema at head")) == WORKERS,
                120,
                "both workers ready",
            )
            workers = first.pids_that_logged("schema at head")
            first.signal(signal.SIGKILL)
            first.wait()
            wait_for(
                lambda: not any(process_alive(pid) for pid in workers), 30, "the workers to end"
            )
        finally:
            first.stop()
            _kill_survivors(workers)
        second = serve(folder, tmp_path / "second.log", "--workers", str(WORKERS), port=first.port)
        try:
            second.wait_for_phase("ready", timeout=120)
            second.signal(signal.SIGTERM)
            assert second.wait(30) == 0, second.logs()
        finally:
            second.stop()


def _kill_survivors(pids: set[int]) -> None:
    """Leave no orphaned worker behind when the test fails."""
    for pid in pids:
        if process_alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize(
    ("supervisor", "statuses"),
    [
        pytest.param(lambda env, log: ServiceProcess.uvicorn(env, log, WORKERS), {0}, id="uvicorn"),
        pytest.param(lambda env, log: ServiceProcess.uvicorn(env, log, 1), {3}, id="uvicorn, 1"),
        pytest.param(lambda env, log: ServiceProcess.gunicorn(env, log, 1), {3}, id="gunicorn, 1"),
        # gunicorn's arbiter halts on the first worker's 3, and may meet the
        # second's while it stops the rest: it then raises its halt again,
        # uncaught, and exits 1 (docs/operations/command-line.md).
        pytest.param(
            lambda env, log: ServiceProcess.gunicorn(env, log, WORKERS), {1, 3}, id="gunicorn"
        ),
    ],
)
def test_invalid_settings_stop_the_server_instead_of_restarting_its_workers(
    supervisor: Callable[[dict[str, str], Path], ServiceProcess],
    statuses: set[int],
    tmp_path: Path,
) -> None:
    """Each worker says which setting is wrong in one line (not its value, not
    a traceback of the service's) and the server stops: no worker is started
    into the same error again. (uvicorn's supervisor itself ends with 0, its
    choice.)"""
    password = "a-password-for-the-settings-test"
    environment = service_environment(
        DATABASE_URL=f"postgresql+asyncpg://app:{password}@127.0.0.1:1/app",
        DATABASE_POOL_SIZE="\u0663",
    )
    process = supervisor(environment, tmp_path / "server.log")
    try:
        assert process.exit_status() in statuses, process.logs()
    finally:
        process.stop()
    logs = process.logs()
    refusals = logs.count("error: invalid settings: DATABASE_POOL_SIZE:")
    assert 1 <= refusals <= WORKERS, logs
    assert "SettingsError" not in logs, logs  # a line, not the service's traceback
    assert logs.count("Booting worker") <= WORKERS, logs
    assert RESTARTED not in logs, logs
    assert password not in logs
    assert port_free(process.port or 0), "a worker still holds the port"


def test_a_worker_that_died_is_logged_by_the_supervisor(tmp_path: Path) -> None:
    """`python -m service --workers N` logs, in the service's own format, that
    its supervisor started, and that a worker died (killed by the kernel for
    its memory, say) before it starts another: an operator sees it. The
    workers wait for a database that does not answer, serving /livez."""
    environment = service_environment(
        DATABASE_URL=f"postgresql+asyncpg://app@127.0.0.1:{free_port()}/app", LOG_FORMAT="json"
    )
    process = ServiceProcess.service(environment, tmp_path / "s.log", "--workers", str(WORKERS))
    try:
        started = "Started server process"
        wait_for(lambda: len(process.pids_that_logged(started)) == WORKERS, 60, "both workers")
        supervisor = process.pids_that_logged("Started parent process")
        assert supervisor == {process.pid}, process.logs()
        killed = min(process.pids_that_logged(started))
        os.kill(killed, signal.SIGKILL)
        wait_for(
            lambda: len(process.pids_that_logged(started)) == WORKERS + 1,
            60,
            "a worker in place of the one killed",
        )
        died = [event for event in process.events() if event["message"].startswith("Child")]
        assert [event["message"] for event in died] == [f"Child process [{killed}] died"]
        assert {event["pid"] for event in died} == {process.pid}
    finally:
        process.stop()
