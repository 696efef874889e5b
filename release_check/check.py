"""The check: the previous release, serving on a schema migrated to the new head.

One database. The release's own server migrates it to the release's head, and
a first walk of its API (the seed walk) fills it with every kind of object and
records how each request is answered on the schema the release was built for.
The server stops; this code migrates the database to head (the new revisions
run on a database with rows, as in production); the release's server starts
again on that schema (it sees it ahead on its own line, and serves) and the
same walk runs again. Any request answered differently than in the seed walk
fails the check, naming the request and the revisions added since the release.
A route that even the seed walk could not drive to a 2xx fails it too: the
check must exercise every route the release had.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from alembic_lockstep import default_path, load_acceptances, load_revisions
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine

from release_check import release as releases
from release_check.edits import unrecorded_edits
from release_check.walk import Call, walk

READY_TIMEOUT = 120.0
MIGRATE_TIMEOUT = 1800
_EXCEPTION_LINE = re.compile(r"^[\w.]+(?:Error|Exception): .*$", re.MULTILINE)
_PASSED_ON = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "XDG_CACHE_HOME")


@dataclass
class Outcome:
    verdict: str  # passed, failed or skipped
    reason: str
    release: str | None = None
    revisions: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)
    operations: int = 0
    requests: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        lines = [f"previous release: {self.release or '-'}"]
        if self.revisions:
            lines.append(f"revisions added since: {', '.join(self.revisions)}")
        lines += [f"  {phase}: {seconds:.1f} s" for phase, seconds in self.seconds.items()]
        lines.append(f"{self.verdict.upper()}: {self.reason}")
        lines += [f"  {failure}" for failure in self.failures]
        if self.server_errors:
            lines.append("  the release's server logged:")
            lines += [f"    {line}" for line in self.server_errors]
        return "\n".join(lines)


class CheckFailed(Exception):
    def __init__(self, reason: str, failures: list[str] | None = None) -> None:
        super().__init__(reason)
        self.failures = failures or []


def run(repository: Path, reference: str | None, admin_url: URL) -> Outcome:
    found = _find_release(repository, reference)
    if found is None:
        return Outcome("skipped", "no earlier commit changed alembic/versions: nothing to check")
    commit, description = found
    with tempfile.TemporaryDirectory(prefix="previous-release-") as folder:
        code = releases.export(repository, commit, Path(folder) / "release")
        new = _new_revisions(repository, code)
        outcome = Outcome("passed", "", release=description, revisions=new)
        edited = unrecorded_edits(repository, code)
        if edited:
            outcome.verdict = "failed"
            outcome.reason = "revisions the release shipped were edited without a record"
            outcome.failures = edited
            return outcome
        if not new:
            outcome.verdict, outcome.reason = "skipped", "the release already has every revision"
            return outcome
        accepted = load_acceptances(default_path(repository / "alembic")).revisions
        reasons = [accepted[r].previous_release for r in new if r in accepted]
        if all(reasons) and len(reasons) == len(new):
            outcome.verdict = "skipped"
            outcome.reason = "accepted in alembic/accepted.toml: " + " / ".join(map(str, reasons))
            return outcome
        _exercise(repository, code, admin_url, outcome, Path(folder))
    return outcome


def _find_release(repository: Path, reference: str | None) -> tuple[str, str] | None:
    if reference is not None:
        commit = releases.resolve(repository, reference)
        return commit, f"{commit[:12]} ({reference})"
    found = releases.previous_release(repository)
    if found is None:
        return None
    commit, newest = found
    subject = releases.git(repository, "log", "-n", "1", "--format=%s", newest)
    return commit, f"{commit[:12]}, the parent of {newest[:12]} ({subject[:80]})"


def _new_revisions(repository: Path, code: Path) -> list[str]:
    heads = load_revisions(code / "alembic.ini").heads
    current = load_revisions(repository / "alembic.ini")
    unknown = [head for head in heads if not current.is_known(head)]
    if unknown:
        raise releases.ReleaseError(f"the release's heads {unknown} are not in this code's history")
    return current.pending(heads)


def _exercise(repository: Path, code: Path, admin_url: URL, outcome: Outcome, folder: Path) -> None:
    with _timed(outcome.seconds, "the release's environment"):
        python = releases.python_for(code)
    database = asyncio.run(_create_database(admin_url))
    token = secrets.token_urlsafe(32)
    server = ReleaseServer(python, code, database, token, folder / "release-server.log")
    try:
        with _timed(outcome.seconds, "release started on its own schema"):
            server.start()
        with _timed(outcome.seconds, "seed walk on the release's schema"):
            seed, operations = walk(server.base_url, token)
        outcome.operations = len(operations)
        _require_every_route(seed, operations)
        server.stop()
        with _timed(outcome.seconds, "migrated to head by this code"):
            _migrate(repository, database)
        with _timed(outcome.seconds, "release started on the new schema"):
            server.start()
        with _timed(outcome.seconds, "walk on the new schema"):
            calls, _ = walk(server.base_url, token)
        outcome.requests = len(seed) + len(calls)
        outcome.failures = _differences(seed, calls)
        if outcome.failures:
            raise CheckFailed(
                f"{len(outcome.failures)} requests answered differently on the new schema"
            )
        outcome.reason = f"{len(operations)} operations, {len(calls)} requests answered as on the release's schema"
    except CheckFailed as failure:
        outcome.verdict = "failed"
        outcome.reason = f"{failure} (revisions {', '.join(outcome.revisions)})"
        outcome.failures = outcome.failures or failure.failures
        outcome.server_errors = server.errors()
    finally:
        server.stop()
        asyncio.run(_drop_database(admin_url, database))


def _require_every_route(calls: list[Call], operations: set[str]) -> None:
    exercised = {call.operation for call in calls if call.succeeded}
    missing = sorted(operations - exercised)
    if missing:
        failures = [f"{c.operation}: {c.status} {c.detail}" for c in calls if not c.succeeded]
        raise CheckFailed(
            f"the walk could not exercise {', '.join(missing)} even on the release's own schema",
            failures,
        )


def _differences(seed: list[Call], calls: list[Call]) -> list[str]:
    if [c.operation for c in seed] != [c.operation for c in calls]:
        return ["the walk made other requests than the seed walk (it must be deterministic)"]
    return [
        f"{call.operation} {call.url}: {call.status} (was {before.status}) {call.detail}".rstrip()
        for before, call in zip(seed, calls, strict=True)
        if call.status != before.status
    ]


def _migrate(repository: Path, database: URL) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "migrate", "--timeout", str(MIGRATE_TIMEOUT)],
        cwd=repository,
        env=_environment(DATABASE_URL=database.render_as_string(hide_password=False)),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()[-15:]
        raise CheckFailed("the new revisions failed on a database with the release's rows", output)


def _environment(**variables: str) -> dict[str, str]:
    passed = {name: os.environ[name] for name in _PASSED_ON if name in os.environ}
    return {**passed, "PYTHONUNBUFFERED": "1", "LOG_FORMAT": "json", **variables}


class ReleaseServer:
    """`python -m service --workers 2`, the way the release's README starts it."""

    def __init__(self, python: str, code: Path, database: URL, token: str, log: Path) -> None:
        self.python, self.code, self.log = python, code, log
        self.variables = {
            "DATABASE_URL": database.render_as_string(hide_password=False),
            "OPERATOR_TOKEN": token,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.base_url = ""

    def start(self) -> None:
        port = _free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        command = [self.python, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*command, "--workers", "2"],
                cwd=self.code,
                env=_environment(**self.variables),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        answer: Any = "no answer"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise CheckFailed(f"the release's server exited with {self.process.returncode}")
            try:
                response = httpx.get(f"{self.base_url}/readyz", timeout=2.0)
                if response.status_code == 200:
                    return
                answer = response.json()
                if answer.get("phase") == "failed":
                    break
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.2)
        raise CheckFailed(f"the release's server did not become ready: {json.dumps(answer)}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def errors(self) -> list[str]:
        """The error events the release's server logged (JSON lines), each with the
        exception's own line (its message, without the SQL and traceback)."""
        if not self.log.exists():
            return []
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("level") in ("error", "critical"):
                causes = _EXCEPTION_LINE.findall(str(event.get("exception", "")))
                found.append(" ".join([str(event.get("message", "")), *causes[-1:]]).strip()[:500])
        return found[-10:]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _create_database(admin_url: URL) -> URL:
    name = f"previous_release_{secrets.token_hex(6)}"
    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        await engine.dispose()
    return admin_url.set(database=name)


async def _drop_database(admin_url: URL, database: URL) -> None:
    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.exec_driver_sql(
                f'DROP DATABASE IF EXISTS "{database.database}" WITH (FORCE)'
            )
    finally:
        await engine.dispose()


@contextmanager
def _timed(seconds: dict[str, float], phase: str) -> Iterator[None]:
    """Times a phase into the outcome (the report says how long the check took)."""
    started = time.monotonic()
    try:
        yield
    finally:
        seconds[phase] = round(time.monotonic() - started, 2)
