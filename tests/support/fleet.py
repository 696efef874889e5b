"""A fleet of real uvicorn processes, several workers each, and the proof that
each revision ran exactly once."""

from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path

import asyncpg
from sqlalchemy.engine import URL

from service.models import Base
from tests.support.processes import ServiceProcess, wait_for
from tests.support.readiness import holding_lock
from tests.support.revisions import REVISIONS

# Records every DDL command that commits, with the session that ran it: proof
# independent of the service's own logs that each revision ran exactly once.
DDL_AUDIT = """
CREATE SCHEMA ddl_audit;
CREATE TABLE ddl_audit.commands (
    pid integer, application_name text, tag text, object text,
    at timestamptz DEFAULT clock_timestamp()
);
CREATE FUNCTION ddl_audit.record() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE command record;
BEGIN
    FOR command IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
        INSERT INTO ddl_audit.commands (pid, application_name, tag, object)
        VALUES (pg_backend_pid(), current_setting('application_name'),
                command.command_tag, command.object_identity);
    END LOOP;
END $$;
CREATE EVENT TRIGGER record_ddl ON ddl_command_end EXECUTE FUNCTION ddl_audit.record();
"""


def start_fleet(
    environment: dict[str, str], folder: Path, processes: int, workers: int
) -> list[ServiceProcess]:
    """Replicas started together, each a uvicorn with several workers."""
    return [
        ServiceProcess.uvicorn(environment, folder / f"replica-{n}.log", workers=workers)
        for n in range(processes)
    ]


async def start_fleet_at_the_lock(
    migration_url: URL, environment: dict[str, str], folder: Path, processes: int, workers: int
) -> list[ServiceProcess]:
    """A fleet whose every worker is waiting for the migration lock, which the
    test held while they started and releases once all wait.

    Started free, the first worker can finish migrating before a busy machine
    has started the others: then nobody waits, and a run proves nothing about
    waiters (a test asserting it failed under load). Held, every worker polls
    while one of them migrates, however slowly the machine starts them."""
    fleet: list[ServiceProcess] = []
    try:
        async with holding_lock(migration_url):
            fleet += start_fleet(environment, folder, processes, workers)
            wait_for(
                lambda: len(_waiting_workers(fleet)) == processes * workers,
                120,
                f"all {processes * workers} workers waiting for the migration lock",
            )
    except BaseException:
        for process in fleet:
            process.stop()
        raise
    return fleet


def _waiting_workers(fleet: list[ServiceProcess]) -> set[int]:
    for process in fleet:
        process.assert_running()
    return {
        event["pid"]
        for process in fleet
        for event in process.events()
        if event["message"].startswith("waiting for the migration lock")
    }


def wait_until_ready(fleet: list[ServiceProcess], workers: int) -> None:
    for process in fleet:
        wait_for(partial(_ready_and_alive, process), 90, f"replica {process.pid} ready")
    # Every worker of every replica reports the head, each in its own process.
    wait_for(lambda: len(_ready_workers(fleet)) == workers, 60, "every worker")


async def assert_migrated_once(connection: asyncpg.Connection, fleet: list[ServiceProcess]) -> None:
    """Each revision ran once, in one session, and no worker logged an error."""
    events = [event for process in fleet for event in process.events()]
    applied = Counter(
        event["revision"] for event in events if event["message"].startswith("applied revision")
    )
    assert applied == Counter(REVISIONS), applied
    assert [event for event in events if event["level"] in {"error", "critical"}] == []
    # Waiters saw the head from their polls and did not queue through the lock.
    waited = {e["pid"] for e in events if e["message"].startswith("waiting for the migration lock")}
    gave_up_waiting = {
        e["pid"] for e in events if e["message"].startswith("another process brought the schema")
    }
    assert waited, "no worker waited for the lock"
    assert gave_up_waiting, "no waiter noticed the head while waiting"
    for process in fleet:
        assert "Traceback" not in process.logs(), process.logs()

    rows = await connection.fetch(
        "SELECT pid, application_name, tag, object FROM ddl_audit.commands"
    )
    created = Counter(row["object"] for row in rows if row["tag"] == "CREATE TABLE")
    # Every table of the models (the schema's source of truth), and Alembic's own.
    tables = ["alembic_version", *Base.metadata.tables]
    assert created == Counter({f"public.{name}": 1 for name in tables})
    # The concurrently built index too (its build commits outside any revision's transaction).
    indexes = Counter(row["object"] for row in rows if row["tag"] == "CREATE INDEX")
    assert indexes["public.users_account_id_auth_provider_auth_subject_key"] == 1
    # One session ran all the DDL, and it was a migrator's.
    assert len({row["pid"] for row in rows}) == 1
    assert all("migrator" in row["application_name"] for row in rows)
    assert await connection.fetchval("SELECT version_num FROM alembic_version") == REVISIONS[-1]
    audited = await connection.fetch(
        "SELECT revision, runner FROM schema_migration_audit ORDER BY id"
    )
    assert [(row["revision"], row["runner"]) for row in audited] == [
        (r, "bootstrap") for r in REVISIONS
    ]
    locks = await connection.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    assert locks == 0


def _ready_and_alive(process: ServiceProcess) -> bool:
    process.assert_running()
    answer = process.readiness()
    return answer is not None and answer[0] == 200


def _ready_workers(fleet: list[ServiceProcess]) -> set[int]:
    return {
        event["pid"]
        for process in fleet
        for event in process.events()
        if event["message"].startswith("schema at head")
    }
