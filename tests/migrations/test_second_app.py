"""A second FastAPI app on the bootstrap package alone (tests/second_app: its
own models, Alembic directory and configuration), run as a fleet of real
uvicorn processes with two workers each: each revision runs exactly once, and
every process is unready (503) until the schema is at head, then ready (200)."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import Counter
from pathlib import Path

import asyncpg
import pytest
from alembic_lockstep.lock import lock_key
from sqlalchemy.engine import URL

from tests.support.fleet import DDL_AUDIT
from tests.support.postgres import connect, service_url
from tests.support.processes import (
    PROCESS_OUTPUTS,
    PROJECT_ROOT,
    ServiceProcess,
    service_environment,
    wait_for,
)

# Every test here starts a real process or server.
pytestmark = pytest.mark.processes

SECOND_APP = PROJECT_ROOT / "tests" / "second_app"
MIGRATIONS = PROJECT_ROOT / "service" / "migrations"
LOCK_NAME = "notes-app:schema-migrations"
REVISIONS = ["notes_0001", "notes_0002"]
PROCESSES = 3
WORKERS = 2
# What the second app may import of the service: the package's public surface.
PUBLIC = {"alembic_lockstep", "alembic_lockstep.environment"}


def service_imports(path: Path) -> set[str]:
    """The modules of `service` that a file imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name == "service" or name.startswith("service.")}


def test_the_package_imports_nothing_else_of_the_service() -> None:
    outside = {
        f"{path.relative_to(PROJECT_ROOT)}: {name}"
        for path in MIGRATIONS.rglob("*.py")
        for name in service_imports(path)
        if not name.startswith("alembic_lockstep")
    }
    assert outside == set()


def test_the_second_app_uses_the_public_surface_alone() -> None:
    used = {name for path in SECOND_APP.rglob("*.py") for name in service_imports(path)}
    assert used == PUBLIC
    # Built for real, it loads no module of the service outside the package.
    script = (
        "import sys; from notes.app import create_app; create_app(); "
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] == 'service')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=SECOND_APP,
        env=second_app_environment("postgresql+asyncpg://notes@127.0.0.1/notes"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    PROCESS_OUTPUTS.append(result.stdout + result.stderr)
    assert result.returncode == 0, result.stderr
    loaded = result.stdout.split()
    assert "alembic_lockstep" in loaded
    assert [name for name in loaded if not name.startswith(("alembic_lockstep",))] == ["service"]


def second_app_environment(url: str) -> dict[str, str]:
    # The notes app on the path before the project: `notes` is its package.
    return service_environment(NOTES_DATABASE_URL=url, PYTHONPATH=f"{SECOND_APP}:{PROJECT_ROOT}")


def start(environment: dict[str, str], log: Path) -> ServiceProcess:
    """uvicorn serving the notes app with several workers, on a port of its own."""
    return ServiceProcess.uvicorn(
        environment, log, workers=WORKERS, factory="notes.app:create_app", http=None
    )


def status_code(process: ServiceProcess, path: str) -> int | None:
    response = process.get(path)
    return response.status_code if response is not None else None


def notes_answers(fleet: list[ServiceProcess]) -> dict[int, set[int]]:
    """The workers (pids) of each process that served /notes, with the welcome note."""
    served: dict[int, set[int]] = {process.pid: set() for process in fleet}
    for process in fleet:
        for _ in range(10):
            response = process.get("/notes")
            if response is not None and response.status_code == 200:
                assert response.json()["notes"] == 1
                served[process.pid].add(response.json()["pid"])
    return served


async def test_a_fleet_of_the_second_app_migrates_once_and_is_ready_only_at_head(
    empty_database: URL, tmp_path: Path
) -> None:
    connection = await connect(empty_database)
    await connection.execute(DDL_AUDIT)
    # The test holds the notes app's lock: the fleet starts and waits, unready.
    holder = await connect(empty_database)
    assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", lock_key(LOCK_NAME))
    url = service_url(empty_database.set(drivername="postgresql+asyncpg"))
    environment = second_app_environment(url)
    fleet = [start(environment, tmp_path / f"notes-{n}.log") for n in range(PROCESSES)]
    try:
        for process in fleet:
            body = process.wait_for_phase("waiting_for_lock", timeout=60)
            assert body["status"] == "unready"
            assert body["target_revision"] == REVISIONS[-1]
            assert status_code(process, "/readyz") == 503
            assert status_code(process, "/notes") == 503
        await holder.close()  # releases the lock
        for process in fleet:
            process.wait_for_phase("ready", timeout=60)
        # Every worker of every process serves, at head.
        seen: dict[int, set[int]] = {process.pid: set() for process in fleet}

        def every_worker_served() -> bool:
            for pid, workers in notes_answers(fleet).items():
                seen[pid] |= workers
            return all(len(workers) == WORKERS for workers in seen.values())

        wait_for(every_worker_served, 60, "every worker of every process to serve /notes")
        assert [status_code(process, "/readyz") for process in fleet] == [200] * PROCESSES
    finally:
        for process in fleet:
            process.stop()
    for process in fleet:
        assert "Traceback" not in process.logs(), process.logs()
    await assert_notes_migrated_once(connection)
    await connection.close()


async def assert_notes_migrated_once(connection: asyncpg.Connection) -> None:
    """One session of a notes-app migrator ran all the DDL, each statement once;
    the audit trail has each revision once; the welcome note was written once."""
    rows = await connection.fetch(
        "SELECT pid, application_name, tag, object FROM ddl_audit.commands"
    )
    created = Counter(row["object"] for row in rows if row["tag"] == "CREATE TABLE")
    assert created == Counter(
        {"public.alembic_version": 1, "public.notes": 1, "public.schema_migration_audit": 1}
    )
    indexes = Counter(row["object"] for row in rows if row["tag"] == "CREATE INDEX")
    assert indexes["public.notes_body_idx"] == 1
    assert len({row["pid"] for row in rows}) == 1
    assert all(row["application_name"].startswith("notes-app migrator") for row in rows)
    audited = await connection.fetch(
        "SELECT revision, runner FROM schema_migration_audit ORDER BY id"
    )
    assert [(row["revision"], row["runner"]) for row in audited] == [
        (revision, "bootstrap") for revision in REVISIONS
    ]
    assert await connection.fetchval("SELECT count(*) FROM notes") == 1
    assert await connection.fetchval("SELECT version_num FROM alembic_version") == REVISIONS[-1]
    locks = await connection.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    assert locks == 0
