"""A fleet of real uvicorn processes, several workers each, on one empty database."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from sqlalchemy.engine import URL

from tests.postgres import connect, service_url
from tests.processes import ServiceProcess, service_environment, wait_for
from tests.revisions import REVISIONS

PROCESSES = 4
WORKERS = 2

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


async def test_fleet_migrates_exactly_once(empty_database: URL, tmp_path: Path) -> None:
    connection = await connect(empty_database)
    await connection.execute(DDL_AUDIT)

    environment = service_environment(DATABASE_URL=service_url(empty_database))
    fleet = [
        ServiceProcess.uvicorn(environment, tmp_path / f"replica-{n}.log", workers=WORKERS)
        for n in range(PROCESSES)
    ]
    try:
        for process in fleet:
            wait_for(lambda p=process: _ready_and_alive(p), 90, f"replica {process.pid} ready")
        # Every worker of every replica reports the head, each in its own process.
        wait_for(lambda: len(_ready_workers(fleet)) == PROCESSES * WORKERS, 60, "every worker")
        applied = Counter(
            match.group(1)
            for process in fleet
            for line in process.log_lines_with("applied revision")
            if (match := re.search(r"applied revision (\S+)", line))
        )
        assert applied == Counter(REVISIONS), applied
        for process in fleet:
            logs = process.logs()
            assert " ERROR " not in logs, logs
            assert "Traceback" not in logs, logs
    finally:
        for process in fleet:
            process.stop()

    rows = await connection.fetch(
        "SELECT pid, application_name, tag, object FROM ddl_audit.commands"
    )
    created = Counter(row["object"] for row in rows if row["tag"] == "CREATE TABLE")
    tables = ["alembic_version", "accounts", "users", "environments", "api_keys", "configs"]
    assert created == Counter({f"public.{name}": 1 for name in tables})
    # The concurrently built index too (its build commits outside any revision's transaction).
    indexes = Counter(row["object"] for row in rows if row["tag"] == "CREATE INDEX")
    assert indexes["public.users_account_id_auth_provider_auth_subject_key"] == 1
    # One session ran all the DDL, and it was a migrator's.
    assert len({row["pid"] for row in rows}) == 1
    assert all("migrator" in row["application_name"] for row in rows)
    assert await connection.fetchval("SELECT version_num FROM alembic_version") == REVISIONS[-1]
    assert (
        await connection.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0
    )
    await connection.close()


def _ready_and_alive(process: ServiceProcess) -> bool:
    process.assert_running()
    answer = process.readiness()
    return answer is not None and answer[0] == 200


def _ready_workers(fleet: list[ServiceProcess]) -> set[int]:
    return {_pid(line) for process in fleet for line in process.log_lines_with("schema at head")}


def _pid(line: str) -> int:
    match = re.search(r"\[pid (\d+)\]", line)
    assert match, line
    return int(match.group(1))
