"""`python -m service` with no DATABASE_URL: the embedded PostgreSQL."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import alembic_lockstep
import pytest

from service.db.embedded import CONNECTION_FILE, SYSTEM_USER, running_server_url
from tests.support.configs import shared_folder
from tests.support.embedded import serve
from tests.support.processes import (
    PROJECT_ROOT,
    ServiceProcess,
    free_port,
    process_alive,
    service_environment,
    wait_for,
)

# Every test here starts a real process or server.
pytestmark = pytest.mark.processes


@pytest.fixture
def folder() -> Iterator[Path]:
    with shared_folder() as path:
        yield path


def postmaster_pid(folder: Path) -> int:
    return int((folder / "postgres" / "data" / "postmaster.pid").read_text().splitlines()[0])


def test_serves_on_embedded_postgres_and_survives_sigkill(folder: Path, tmp_path: Path) -> None:
    first = serve(folder, tmp_path / "first.log")
    try:
        body = first.wait_for_phase("ready", timeout=120)
        assert body["migrated_here"] is True
        logs = first.logs()
        assert f"docs: http://127.0.0.1:{first.port}/docs" in logs
        assert "embedded PostgreSQL: postgresql+asyncpg://postgres:***@127.0.0.1:" in logs
        assert (folder / "postgres" / "password").read_text().strip() not in logs
        server = postmaster_pid(folder)
        first.signal(signal.SIGKILL)
        first.wait()
        # The server follows its parent down instead of lingering as an orphan.
        wait_for(lambda: not process_alive(server), 30, "the orphaned server to stop")
        # No code of the service ran to remove the connection file: it stays,
        # and the commands run beside a service see that no server is behind it.
        assert (folder / "postgres" / CONNECTION_FILE).exists()
        assert running_server_url(folder / "postgres") is None
    finally:
        first.stop()

    second = serve(folder, tmp_path / "second.log")
    try:
        body = second.wait_for_phase("ready", timeout=120)
        assert body["migrated_here"] is False  # the data persisted
        server = postmaster_pid(folder)
        second.signal(signal.SIGTERM)
        assert second.wait(30) == 0
        assert not process_alive(server)
        assert "Traceback" not in second.logs()
    finally:
        second.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="starting a server as another user needs root")
def test_a_server_left_running_by_an_earlier_run_is_replaced(folder: Path, tmp_path: Path) -> None:
    first = serve(folder, tmp_path / "first.log")
    first.wait_for_phase("ready", timeout=120)
    first.signal(signal.SIGTERM)
    assert first.wait(30) == 0
    assert not (folder / "postgres" / "data" / "postmaster.pid").exists()
    # Start the server again outside any service process, as a crash on a system
    # without a parent-death signal would leave it.
    binaries = folder / "postgres" / "binaries" / "embedded_postgres" / "pginstall" / "bin"
    user = pwd.getpwnam(SYSTEM_USER)
    leftover = subprocess.Popen(
        [str(binaries / "postgres"), "-D", str(folder / "postgres" / "data"), "-p", str(free_port()),
         "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={folder / 'postgres' / 'run'}"],
        user=user.pw_uid, group=user.pw_gid, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: (folder / "postgres" / "data" / "postmaster.pid").exists(), 30, "leftover")
        second = serve(folder, tmp_path / "second.log")
        try:
            second.wait_for_phase("ready", timeout=120)
            assert leftover.wait(30) == 0
            assert "left running by an earlier run" in second.logs()
        finally:
            second.stop()
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()


def test_a_second_process_on_the_same_folder_is_refused(folder: Path, tmp_path: Path) -> None:
    first = serve(folder, tmp_path / "first.log")
    try:
        first.wait_for_phase("ready", timeout=120)
        second = serve(folder, tmp_path / "second.log")
        assert second.wait(60) == 1
        assert "another process is using the embedded PostgreSQL" in second.logs()
        first.assert_running()
    finally:
        first.stop()


def _readable_by_everyone(path: Path) -> bool:
    return all(part.stat().st_mode & 0o005 == 0o005 for part in [path, *path.parents])


def _interpreter_for_others() -> list[str] | None:
    """A command running this environment's Python for another user, if there is one.

    A pyenv interpreter under /root cannot be run by others; the system's Python
    of the same version can, with this environment's packages on its path.
    """
    if _readable_by_everyone(Path(sys.executable).resolve()):
        return [sys.executable]
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    packages = next(p for p in map(Path, sys.path) if p.name == "site-packages")
    # The migration bootstrap is installed editable: a .pth file names its
    # folder, and a PYTHONPATH entry's .pth files are not read.
    library = Path(alembic_lockstep.__file__).resolve().parents[1]
    if system.exists() and _readable_by_everyone(packages):
        return ["env", f"PYTHONPATH={packages}:{library}", str(system)]
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to an unprivileged user needs root")
@pytest.mark.skipif(
    _interpreter_for_others() is None or not _readable_by_everyone(PROJECT_ROOT),
    reason="the project or its Python is in a folder other users cannot read",
)
def test_runs_as_an_unprivileged_user(folder: Path) -> None:
    home = folder / "home"
    home.mkdir()
    nobody = pwd.getpwnam("nobody")
    os.chown(home, nobody.pw_uid, nobody.pw_gid)
    port = free_port()
    environment = service_environment(HOME=str(home), XDG_DATA_HOME=str(home / ".local/share"))
    command = ["runuser", "-u", "nobody", "--", *(_interpreter_for_others() or [])]
    # Built as every service process is, so its log is among those scanned for secrets.
    process = ServiceProcess.service(
        environment, folder / "nobody.log", port=port, interpreter=command
    )
    try:
        data = home / ".local/share/platform-service/postgres/data"
        process.wait_for_phase("ready", timeout=120)
        assert data.stat().st_uid == nobody.pw_uid
        assert not any(path.owner() == "root" for path in data.rglob("*"))
    finally:
        process.signal(signal.SIGTERM)
        process.wait(30)  # runuser passes SIGTERM on, then ends by the same signal
    wait_for(lambda: not (data / "postmaster.pid").exists(), 30, "the server to stop")


def test_a_stale_pid_file_naming_another_program_is_not_signalled(
    folder: Path, tmp_path: Path
) -> None:
    """A killed run's postmaster.pid may name, by now, any process, even one
    called postgres-something: the service neither signals it nor refuses to
    start; it removes the stale file."""
    first = serve(folder, tmp_path / "first.log")
    first.wait_for_phase("ready", timeout=120)
    first.stop()
    decoy = subprocess.Popen(["bash", "-c", "exec -a postgres-unrelated sleep 300"])
    try:
        pid_file = folder / "postgres" / "data" / "postmaster.pid"
        pid_file.write_text(f"{decoy.pid}\n{folder / 'postgres' / 'data'}\n")
        second = serve(folder, tmp_path / "second.log")
        try:
            second.wait_for_phase("ready", timeout=120)
        finally:
            second.stop()
        assert decoy.poll() is None, "the service signalled a process a stale pid file named"
        assert "left running by an earlier run" not in second.logs()
    finally:
        decoy.kill()
        decoy.wait()


def test_the_servers_log_is_for_its_owner_only(folder: Path, tmp_path: Path) -> None:
    process = serve(folder, tmp_path / "serve.log")
    try:
        process.wait_for_phase("ready", timeout=120)
        assert (folder / "postgres" / "postgres.log").stat().st_mode & 0o777 == 0o600
    finally:
        process.stop()


@pytest.mark.processes
def test_a_dead_server_stops_the_service_with_its_reason(folder: Path, tmp_path: Path) -> None:
    """A postmaster killed under `--workers 2` (the OOM killer, a mistaken kill)
    is named in one log line with how it ended and its log's last lines, and the
    service exits 1 instead of answering 503 for good; the next start serves."""
    first = serve(folder, tmp_path / "first.log", "--workers", "2")
    try:
        first.wait_for_phase("ready", timeout=120)
        server = postmaster_pid(folder)
        os.kill(server, signal.SIGKILL)
        assert first.exit_status(timeout=90) == 1, first.logs()
    finally:
        first.stop()
    reports = [
        event
        for event in first.events()
        if event["message"].startswith("the embedded PostgreSQL (pid")
    ]
    assert len(reports) == 1, first.logs()
    report = reports[0]
    assert report["level"] == "error"
    assert f"(pid {server}) died: killed by SIGKILL" in report["message"]
    server_log = folder / "postgres" / "postgres.log"
    quoted = report["message"].split(f"the last lines of {server_log}: ", 1)[1].split(" | ")
    written = {line.strip() for line in server_log.read_text().splitlines()}
    assert quoted, report
    assert set(quoted) <= written, report
    assert not (folder / "postgres" / "database-url").exists()

    second = serve(folder, tmp_path / "second.log")
    try:
        assert second.wait_for_phase("ready", timeout=120)["migrated_here"] is False
    finally:
        second.stop()
