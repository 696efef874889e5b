"""Real service processes for the tests: start, probe, signal, read logs."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import URL

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# The operator token of every process the tests start (unless a test sets
# another): /readyz's details and /metrics are the operator's.
OPERATOR_TOKEN = "operator-token-for-tests-0123456789abcdef"
OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


# Variables of the developer's shell that would change what a test means.
def _service_variables() -> tuple[str, ...]:
    from settings import Settings

    return (
        *(name.upper() for name in Settings.model_fields),
        "EMBEDDED_POSTGRES_DIR",
        "PORT",
        "WEB_CONCURRENCY",
    )


SERVICE_VARIABLES = _service_variables()


# Every log and output of a process the tests started, for the secrets scan
# at the end of the run (tests/conftest.py).
PROCESS_LOGS: list[Path] = []
PROCESS_OUTPUTS: list[str] = []


# Ports the kernel hands out for outgoing connections and for bind(0).
_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Seeded by nothing a test sets (pytest-randomly seeds `random` alike in every
# process of the run, which would pick alike).
_CHANCE = random.SystemRandom()


def free_port() -> int:
    """A loopback port free now, for a server a test starts, below the range
    of ephemeral ports. A port the kernel hands out (bind to 0) may be taken
    by any outgoing connection (the suite's many, to PostgreSQL above all)
    before the server binds it: a run once failed with "address already in
    use". Below that range only another call of this function could pick
    it, one chance in thousands."""
    if _EPHEMERAL.exists():
        low = int(_EPHEMERAL.read_text().split()[0])
        for _ in range(100):
            port = _CHANCE.randrange(max(1024, low - 8192), low)
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def service_environment(**variables: str) -> dict[str, str]:
    from tests.support.revisions import HEAD

    environment = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    environment["PYTHONUNBUFFERED"] = "1"
    # Test-only scenario revisions (tests/scenarios) build on the service's head.
    environment["TEST_SCENARIO_BASE"] = HEAD
    environment["OPERATOR_TOKEN"] = OPERATOR_TOKEN
    environment.update(variables)
    return environment


def run_python(
    *arguments: str,
    url: URL | None = None,
    timeout: float = 300,
    environment: Mapping[str, str] | None = None,
    **variables: str,
) -> subprocess.CompletedProcess[str]:
    """`python ARGUMENTS` in the project, on `url` (DATABASE_URL), to completion,
    with the service's environment and `environment` and `variables` on top."""
    environment = service_environment(**{**(environment or {}), **variables})
    if url is not None:
        environment["DATABASE_URL"] = url.render_as_string(hide_password=False)
    result = subprocess.run(
        [sys.executable, *arguments],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    PROCESS_OUTPUTS.append(result.stdout + result.stderr)
    return result


def process_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (ProcessLookupError, FileNotFoundError):
        return False
    return state != "Z"


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll `condition` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class ServiceProcess:
    """`python -m service ...` or uvicorn, with its output in a log file."""

    def __init__(
        self,
        arguments: list[str],
        environment: Mapping[str, str],
        log_path: Path,
        interpreter: Sequence[str] = (sys.executable,),
        cwd: Path = PROJECT_ROOT,
    ):
        """`interpreter`: the command that runs Python (through `runuser`, say);
        `cwd`: where it runs (outside the project, the service is not importable)."""
        self.log_path = log_path
        PROCESS_LOGS.append(log_path)
        self.port: int | None = None
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [*interpreter, *arguments],
                cwd=cwd,
                env=dict(environment),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    @classmethod
    def uvicorn(
        cls,
        environment: Mapping[str, str],
        log_path: Path,
        workers: int = 1,
        factory: str = "service.app:create_app",
        # The bounded protocol `python -m service` uses (docs/security.md, "Limits");
        # None: uvicorn's own.
        http: str | None = "service.http_protocol:LimitedHttpToolsProtocol",
        interpreter: Sequence[str] = (sys.executable,),
        cwd: Path = PROJECT_ROOT,
    ) -> ServiceProcess:
        port = free_port()
        arguments = ["-m", "uvicorn", "--factory", factory]
        arguments += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
        if http is not None:
            arguments += ["--http", http]
        started = cls(arguments, environment, log_path, interpreter, cwd)
        started.port = port
        return started

    @classmethod
    def service(
        cls,
        environment: Mapping[str, str],
        log_path: Path,
        *arguments: str,
        port: int | None = None,
        interpreter: Sequence[str] = (sys.executable,),
    ) -> ServiceProcess:
        """`python -m service --port P ARGUMENTS` (the image's entry point)."""
        port = port or free_port()
        command = ["-m", "service", "--port", str(port), *arguments]
        started = cls(command, environment, log_path, interpreter)
        started.port = port
        return started

    @classmethod
    def gunicorn(
        cls, environment: Mapping[str, str], log_path: Path, workers: int = 2
    ) -> ServiceProcess:
        """gunicorn's arbiter with uvicorn workers."""
        port = free_port()
        arguments = ["-m", "gunicorn", "-k", "uvicorn_worker.UvicornWorker", "-w", str(workers)]
        arguments += ["-b", f"127.0.0.1:{port}", "service.app:create_app()"]
        started = cls(arguments, environment, log_path)
        started.port = port
        return started

    @property
    def pid(self) -> int:
        return self.process.pid

    def get(self, path: str) -> httpx.Response | None:
        """GET as the operator (probes' details and metrics are the operator's)."""
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}{path}", headers=OPERATOR, timeout=2.0)
        except httpx.TransportError:
            return None

    def readiness(self) -> tuple[int, dict[str, Any]] | None:
        response = self.get("/readyz")
        return (response.status_code, response.json()) if response is not None else None

    def wait_for_phase(self, phase: str, timeout: float = 60.0) -> dict[str, Any]:
        def in_phase() -> dict[str, Any] | None:
            self.assert_running()
            answer = self.readiness()
            return answer[1] if answer and answer[1]["phase"] == phase else None

        return wait_for(in_phase, timeout, f"phase {phase!r} of pid {self.pid}")  # type: ignore[no-any-return]

    def assert_running(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(
                f"pid {self.pid} exited with {self.process.returncode}:\n{self.logs()}"
            )

    def signal(self, number: signal.Signals) -> None:
        self.process.send_signal(number)

    def wait(self, timeout: float = 30.0) -> int:
        return self.process.wait(timeout)

    def exit_status(self, timeout: float = 60.0) -> int:
        """Wait for the process to end by itself; stop it if it does not."""
        try:
            return self.wait(timeout)
        finally:
            self.stop()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        # Its log may be in a folder the test removes before the secrets scan
        # of the test's end (tests/support/secrets.py): keep what it said.
        if self.log_path in PROCESS_LOGS and self.log_path.exists():
            PROCESS_LOGS.remove(self.log_path)
            PROCESS_OUTPUTS.append(self.logs())

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        """The JSON log events the process wrote (other lines are skipped)."""
        from service.observability.logs import json_events

        return json_events(self.logs())

    def pids_that_logged(self, start: str) -> set[int]:
        """The processes (workers) that logged a message starting with `start`."""
        return {event["pid"] for event in self.events() if event["message"].startswith(start)}
