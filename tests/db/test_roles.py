"""Least privilege: an owner role migrates (the Job, or MIGRATION_DATABASE_URL of
a process that migrates on startup), an application role only reads and writes
rows. Two real roles, the whole flow; the application role never owns or alters
a table, and a role without rights stops the server instead of looping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tests.support.api import create_account_over_http
from tests.support.postgres import connect, service_url
from tests.support.processes import (
    OPERATOR_TOKEN,
    ServiceProcess,
    run_python,
    service_environment,
    wait_for,
)
from tests.support.revisions import HEAD
from tests.support.roles import GRANTS_ON_EXISTING_TABLES, Roles, owner_and_app_roles

# Every test here starts a real process or server.
pytestmark = pytest.mark.processes

WORKERS = 2


@pytest.fixture
async def roles(admin_url: URL) -> AsyncIterator[Roles]:
    async with owner_and_app_roles(admin_url) as created:
        yield created


def _environment(roles: Roles, database: str, **variables: str) -> dict[str, str]:
    return service_environment(
        DATABASE_URL=service_url(roles.url(roles.app, database)),
        MIGRATION_DATABASE_URL=service_url(roles.url(roles.owner, database)),
        OPERATOR_TOKEN=OPERATOR_TOKEN,
        LOG_FORMAT="json",
        **variables,
    )


def _serve(roles: Roles, database: str, log: Path, **variables: str) -> ServiceProcess:
    """`python -m service --workers 2` ready, and the API writing through the
    application role; stopped before it returns."""
    process = ServiceProcess.service(
        _environment(roles, database, **variables), log, "--workers", str(WORKERS)
    )
    try:
        wait_for(
            lambda: len(process.pids_that_logged("schema at head")) == WORKERS, 60, "both ready"
        )
        create_account_over_http(process.port or 0, "Roles")
    finally:
        process.stop()
    return process


async def _assert_only_the_owner_changed_the_schema(roles: Roles, database: str) -> None:
    connection = await connect(roles.admin.set(database=database))
    try:
        ddl = await connection.fetch("SELECT DISTINCT role FROM ddl_roles.commands")
        # The schema changes were the owner's; the operator (the admin) granted.
        assert {row["role"] for row in ddl} - {roles.admin.username} == {roles.owner}
        owners = await connection.fetch(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"
        )
        assert [row["tableowner"] for row in owners] == [roles.owner]
        assert not await connection.fetchval(
            "SELECT has_schema_privilege($1, 'public', 'CREATE')", roles.app
        )
        assert await connection.fetchval("SELECT version_num FROM alembic_version") == HEAD
    finally:
        await connection.close()


async def _migrated_by_a_job(roles: Roles) -> str:
    """A database the migrate Job brought to head before the application role had
    any right: the Job needs none of them."""
    database = await roles.database(grants=None)
    job = run_python("-m", "service", "migrate", environment=_environment(roles, database))
    assert job.returncode == 0, job.stderr
    return database


async def test_a_migrate_job_as_owner_then_a_deployment_as_the_application_role(
    roles: Roles, tmp_path: Path
) -> None:
    database = await _migrated_by_a_job(roles)
    await roles.grant(database, GRANTS_ON_EXISTING_TABLES)
    _serve(roles, database, tmp_path / "deployment.log", MIGRATE_ON_STARTUP="false")
    await _assert_only_the_owner_changed_the_schema(roles, database)


async def test_migrating_on_startup_with_an_owner_and_an_application_role(
    roles: Roles, tmp_path: Path
) -> None:
    database = await roles.database()
    process = _serve(roles, database, tmp_path / "startup.log")
    await _assert_only_the_owner_changed_the_schema(roles, database)
    assert "may open" not in process.logs()  # the default pools fit the server


async def test_an_application_role_without_rights_stops_the_server(
    roles: Roles, tmp_path: Path
) -> None:
    database = await _migrated_by_a_job(roles)
    process = ServiceProcess.service(
        _environment(roles, database), tmp_path / "no-rights.log", "--workers", str(WORKERS)
    )
    assert process.exit_status() == 4, process.logs()
    logs = process.logs()
    assert "migration failed (permission_denied)" in logs
    assert "42501" in logs
    assert "died" not in logs
