"""Shared parts of the benchmarks: a PostgreSQL server, databases, processes
of the service, timing and statistics. Everything runs on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import URL

from service.observability.logs import json_events
from settings import Settings, parse_database_url

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BENCH_VARIABLES = (*(name.upper() for name in Settings.model_fields), "PORT", "WEB_CONCURRENCY")


def plain(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def full(url: URL) -> str:
    return url.render_as_string(hide_password=False)


@contextmanager
def postgres() -> Iterator[URL]:
    """BENCH_DATABASE_URL's server (a superuser URL), or an embedded one of our own."""
    configured = os.environ.get("BENCH_DATABASE_URL")
    if configured:
        yield parse_database_url(configured).set(database="postgres")
        return
    from service.db.embedded import EmbeddedPostgres

    folder = Path(tempfile.mkdtemp(prefix="platform-service-bench-"))
    folder.chmod(0o755)
    try:
        with EmbeddedPostgres(folder) as server:
            yield server.url("postgres")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def _execute(url: URL, *statements: str) -> None:
    connection = await asyncpg.connect(plain(url))
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def fetch_value(url: URL, query: str) -> Any:
    connection = await asyncpg.connect(plain(url))
    try:
        return await connection.fetchval(query)
    finally:
        await connection.close()


def execute(url: URL, *statements: str) -> None:
    asyncio.run(_execute(url, *statements))


def create_database(admin: URL, template: str | None = None) -> URL:
    name = f"bench_{uuid.uuid4().hex[:12]}"
    clause = f" TEMPLATE {template}" if template else ""
    execute(admin, f"CREATE DATABASE {name}{clause}")
    return admin.set(database=name)


def drop_database(admin: URL, url: URL) -> None:
    execute(admin, f"DROP DATABASE IF EXISTS {url.database} WITH (FORCE)")


def environment(url: URL | None = None, **variables: str) -> dict[str, str]:
    """The process environment: nothing of the caller's service settings, JSON logs."""
    found = {k: v for k, v in os.environ.items() if k not in BENCH_VARIABLES}
    found.update(PYTHONUNBUFFERED="1", LOG_FORMAT="json")
    if url is not None:
        found["DATABASE_URL"] = full(url)
    found.update(variables)
    return found


def run(arguments: list[str], env: Mapping[str, str], timeout: float = 1800) -> float:
    """Run a command in the project to completion; its wall-clock seconds."""
    started = time.perf_counter()
    result = subprocess.run(
        arguments,
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(arguments[:4])} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - started


def migrate(url: URL, **variables: str) -> None:
    run([PYTHON, "-m", "service", "migrate"], environment(url, **variables))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Process:
    """A process of the service (or a baseline), its port and its log."""

    popen: subprocess.Popen[bytes]
    port: int
    log: Path
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def uvicorn(
        cls, app: str, env: Mapping[str, str], log: Path, workers: int = 1, http: str = "auto"
    ) -> Process:
        port = free_port()
        started = time.perf_counter()
        arguments = [PYTHON, "-m", "uvicorn", "--factory", app, "--host", "127.0.0.1"]
        arguments += ["--port", str(port), "--workers", str(workers), "--no-access-log"]
        arguments += ["--http", http]
        with log.open("wb") as output:
            popen = subprocess.Popen(
                arguments, cwd=ROOT, env=dict(env), stdout=output, stderr=subprocess.STDOUT
            )
        return cls(popen, port, log, started)

    def wait_ready(self, timeout: float = 120.0, path: str = "/readyz") -> float:
        """Seconds from process start to the first 200 on `path` (polled every 5 ms)."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(
                    f"exited with {self.popen.returncode}:\n{self.log.read_text()[-3000:]}"
                )
            if status(self.port, path) == 200:
                return time.perf_counter() - self.started
            time.sleep(0.005)
        raise RuntimeError(f"not ready after {timeout}s:\n{self.log.read_text()[-3000:]}")

    def events(self) -> list[dict[str, Any]]:
        return json_events(self.log.read_text(errors="replace"))

    def pids_that_logged(self, start: str) -> set[int]:
        """The processes (workers) that logged a message starting with `start`."""
        return {e["pid"] for e in self.events() if str(e.get("message", "")).startswith(start)}

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def status(port: int, path: str) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (OSError, urllib.error.URLError):
        return None


JSONAPI = "application/vnd.api+json"


def api_call(port: int, method: str, path: str, token: str, body: Any = None) -> Any:
    """One JSON:API request to the service on `port`; its decoded answer."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": JSONAPI},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def new_account(port: int, operator_token: str) -> Any:
    """A new account (POST /v1/accounts): the answer, with its first API key included."""
    owner = {"email": "owner@bench.test", "role": "OWNER"}
    body = {"data": {"type": "accounts", "attributes": {"name": "Bench", "owner": owner}}}
    return api_call(port, "POST", "/v1/accounts", operator_token, body)


def included_key(account: Any) -> str:
    """The API key's secret in the answer of `new_account`."""
    return str(
        next(i for i in account["included"] if i["type"] == "api-keys")["attributes"]["secret"]
    )


def process_tree(pid: int) -> list[int]:
    """The process and its children (uvicorn's workers)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return [pid]
    return [pid, *(int(child) for child in children)]


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) used so far by the process and its children."""
    total = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float | None:
    """VmHWM: the most resident memory the process has had."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def summary(samples: list[float], digits: int = 4) -> dict[str, Any]:
    """Median, quartiles, extremes and every sample."""
    ordered = sorted(samples)
    quartiles = statistics.quantiles(ordered, n=4) if len(ordered) > 1 else [ordered[0]] * 3
    return {
        "median": round(statistics.median(ordered), digits),
        "p25": round(quartiles[0], digits),
        "p75": round(quartiles[2], digits),
        "min": round(ordered[0], digits),
        "max": round(ordered[-1], digits),
        "n": len(ordered),
        "samples": [round(sample, digits) for sample in samples],
    }


def ratio(numerator: dict[str, Any], denominator: dict[str, Any]) -> float:
    return round(numerator["median"] / denominator["median"], 3)


def target(measure: str, value: float, limit: float, kind: str) -> dict[str, Any]:
    """A target row: `kind` is "at most" or "at least"."""
    met = value <= limit if kind == "at most" else value >= limit
    return {"measure": measure, "value": value, "target": f"{kind} {limit}", "met": met}


def machine(admin: URL) -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": asyncio.run(fetch_value(admin, "SHOW server_version")),
        "commit": commit or "unknown",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
