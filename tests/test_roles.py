"""Least privilege: an owner role migrates (the Job, or MIGRATION_DATABASE_URL of
a process that migrates on startup), an application role only reads and writes
rows. Two real roles, the whole flow; the application role never owns or alters
a table, and a role without rights stops the server instead of looping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import URL

from tests.api import JSONAPI, document
from tests.conftest import OPERATOR_TOKEN
from tests.postgres import connect, service_url
from tests.processes import ServiceProcess, run_python, service_environment
from tests.revisions import HEAD
from tests.roles import GRANTS_ON_EXISTING_TABLES, Roles, owner_and_app_roles

WORKERS = "2"


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


def _serves(process: ServiceProcess) -> None:
    """Ready, and the API writes and reads through the application role."""
    process.wait_for_phase("ready")
    created = httpx.post(
        f"http://127.0.0.1:{process.port}/v1/accounts",
        headers={"Authorization": f"Bearer {OPERATOR_TOKEN}", "Content-Type": JSONAPI},
        json=document(
            "accounts", {"name": "Roles", "owner": {"email": "o@example.test", "role": "OWNER"}}
        ),
        timeout=10,
    )
    assert created.status_code == 201, created.text


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


async def test_a_migrate_job_as_owner_then_a_deployment_as_the_application_role(
    roles: Roles, tmp_path: Path
) -> None:
    # The Job runs before the application role has any right: it needs none of them.
    database = await roles.database(grants=None)
    job = run_python("-m", "service", "migrate", **_environment(roles, database))
    assert job.returncode == 0, job.stderr
    await roles.grant(database, GRANTS_ON_EXISTING_TABLES)
    process = ServiceProcess.service(
        _environment(roles, database, MIGRATE_ON_STARTUP="false"),
        tmp_path / "deployment.log",
        "--workers", WORKERS,
    )  # fmt: skip
    try:
        _serves(process)
    finally:
        process.stop()
    await _assert_only_the_owner_changed_the_schema(roles, database)


async def test_migrating_on_startup_with_an_owner_and_an_application_role(
    roles: Roles, tmp_path: Path
) -> None:
    database = await roles.database()
    process = ServiceProcess.service(
        _environment(roles, database), tmp_path / "startup.log", "--workers", WORKERS
    )
    try:
        _serves(process)
    finally:
        process.stop()
    await _assert_only_the_owner_changed_the_schema(roles, database)
    assert "may open" not in process.logs()  # the default pools fit the server


async def test_an_application_role_without_rights_stops_the_server(
    roles: Roles, tmp_path: Path
) -> None:
    database = await roles.database(grants=None)
    job = run_python("-m", "service", "migrate", **_environment(roles, database))
    assert job.returncode == 0, job.stderr
    process = ServiceProcess.service(
        _environment(roles, database), tmp_path / "no-rights.log", "--workers", WORKERS
    )
    try:
        assert process.wait(60) == 4, process.logs()
    finally:
        process.stop()
    logs = process.logs()
    assert "migration failed (permission_denied)" in logs
    assert "42501" in logs
    assert "died" not in logs
