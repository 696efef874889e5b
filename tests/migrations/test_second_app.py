"""A second FastAPI app on the bootstrap library alone, alembic-lockstep
(tests/second_app: its own models, Alembic directory and configuration), run
as a fleet of real uvicorn processes with two workers each: each revision runs
exactly once, and every process is unready (503) until the schema is at head,
then ready (200); under the library's runner, a broken revision ends the
runner with status 4.

The processes run in the second app's folder with only that folder on their
path, so nothing of the service is importable to them. SECOND_APP_PYTHON names
the interpreter to run them with: CI (.ci/run) points it at a clean virtual
environment holding the library's wheel and nothing of the service; by default
it is this environment's (the library installed from its folder)."""

from __future__ import annotations

import ast
import shutil
from collections import Counter
from pathlib import Path

import alembic_lockstep
import asyncpg
import pytest
from alembic_lockstep.lock import lock_key
from sqlalchemy.engine import URL

from tests.support.fleet import DDL_AUDIT
from tests.support.postgres import connect, service_url
from tests.support.processes import (
    PROJECT_ROOT,
    ServiceProcess,
    free_port,
    wait_for,
)
from tests.support.second_app import (
    PYTHON,
    REVISIONS,
    SECOND_APP,
    run_second_app_python,
    second_app_environment,
)

# Every test here starts a real process or server.
pytestmark = pytest.mark.processes

LIBRARY = Path(alembic_lockstep.__file__).parent
LOCK_NAME = "notes-app:schema-migrations"
PROCESSES = 3
WORKERS = 2
# Code of the project that adopts the library: it may import only the names
# the library declares public.
ADOPTER_CODE = [
    PROJECT_ROOT / "service",
    PROJECT_ROOT / "alembic",
    PROJECT_ROOT / "release_check",
    PROJECT_ROOT / "bench",
    PROJECT_ROOT / "settings.py",
    SECOND_APP,
]


def imports_of(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of each import in a file; names is empty for `import module`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
    return found


def python_files(*places: Path) -> list[Path]:
    return [
        file for place in places for file in (place.rglob("*.py") if place.is_dir() else [place])
    ]


def test_the_library_imports_nothing_of_the_service() -> None:
    assert LIBRARY.name == "alembic_lockstep"
    outside = {
        f"{path.relative_to(LIBRARY)}: {module}"
        for path in python_files(LIBRARY)
        for module, _ in imports_of(path)
        if module.split(".")[0] in {"service", "settings", "tests", "notes", "release_check"}
    }
    assert outside == set()


def test_the_service_imports_only_what_the_library_declares_public() -> None:
    public = set(alembic_lockstep.__all__)
    private = sorted(
        f"{path.relative_to(PROJECT_ROOT)}: {module} {names}"
        for path in python_files(*ADOPTER_CODE)
        for module, names in imports_of(path)
        if module.split(".")[0] == "alembic_lockstep"
        and (module != "alembic_lockstep" or not set(names) <= public)
    )
    assert private == []


def test_every_public_name_is_there() -> None:
    missing = [name for name in alembic_lockstep.__all__ if not hasattr(alembic_lockstep, name)]
    assert missing == []


def test_the_second_app_runs_without_the_service() -> None:
    # Built for real, with nothing of the service importable, it loads no
    # module of the service.
    script = (
        "import sys, importlib.util; from notes.app import create_app; create_app(); "
        "assert importlib.util.find_spec('service') is None, 'the service is importable'; "
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    result = run_second_app_python("-c", script)
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.split())
    assert "alembic_lockstep" in loaded
    assert loaded.isdisjoint({"service", "settings", "tests"})


def start(environment: dict[str, str], log: Path, folder: Path = SECOND_APP) -> ServiceProcess:
    """uvicorn serving the notes app with several workers, on a port of its own."""
    return ServiceProcess.uvicorn(
        environment,
        log,
        workers=WORKERS,
        factory="notes.app:create_app",
        http=None,
        interpreter=(PYTHON,),
        cwd=folder,
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
    assert_progress_visible([process.logs() for process in fleet])
    await assert_notes_migrated_once(connection)
    await connection.close()


def assert_progress_visible(logs: list[str]) -> None:
    """The app sets up no logging, yet each process said it waited for the
    lock and who held it, and that it was ready; the one migrator, each
    revision it applied."""
    for log in logs:
        assert "waiting for the migration lock, held by" in log, log
        assert "schema at head notes_0002" in log, log
    for revision in REVISIONS:
        applied = [log for log in logs if f"applied revision {revision} " in log]
        assert len(applied) == 1, logs


BROKEN_REVISION = '''"""A revision that fails: division by zero.

Revision ID: notes_0003
Revises: notes_0002
"""

from alembic import op

revision = "notes_0003"
down_revision = "notes_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE TABLE half_done (id integer)")
    op.execute("SELECT 1 / 0")


def downgrade() -> None:
    pass
'''


async def test_the_runner_exits_non_zero_when_a_revision_is_broken(
    empty_database: URL, tmp_path: Path
) -> None:
    """`python -m alembic_lockstep serve --workers 2` on the notes app with a
    broken third revision: each worker fails it (rolled back whole), and the
    runner ends with 4 where plain `uvicorn --workers 2` ends with 0; the
    progress, in JSON, names the revisions applied and the failure's cause."""
    app = tmp_path / "second_app"
    shutil.copytree(SECOND_APP, app, ignore=shutil.ignore_patterns("__pycache__"))
    (app / "alembic" / "versions" / "notes_0003_broken.py").write_text(BROKEN_REVISION)
    url = service_url(empty_database.set(drivername="postgresql+asyncpg"))
    environment = {**second_app_environment(url, app), "NOTES_LOG_FORMAT": "json"}
    port = free_port()
    runner = ServiceProcess(
        [
            "-m",
            "alembic_lockstep",
            "serve",
            "notes.app:create_app",
            "--factory",
            "--port",
            str(port),
            "--workers",
            str(WORKERS),
        ],
        environment,
        tmp_path / "runner.log",
        (PYTHON,),
        app,
    )
    runner.port = port
    try:
        status = runner.exit_status(timeout=120)
    finally:
        runner.stop()
    logs = runner.logs()
    assert status == alembic_lockstep.EXIT_MIGRATION_FAILED, logs
    events = runner.events()
    applied = [
        event.get("revision") for event in events if "applied revision" in str(event["message"])
    ]
    assert applied == REVISIONS, logs
    failures = [event for event in events if event["level"] == "error"]
    assert any("division by zero" in str(event["message"]) for event in failures), logs
    assert "exiting with status 4: the migration failed" in logs
    connection = await connect(empty_database)
    try:
        assert await connection.fetchval("SELECT version_num FROM alembic_version") == "notes_0002"
        assert await connection.fetchval("SELECT to_regclass('half_done')") is None
    finally:
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
