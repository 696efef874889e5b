"""TLS to PostgreSQL: `sslmode` (disable, require, verify-ca, verify-full) and
`sslrootcert` in both database URLs, against a server with TLS on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL

from service.db.engines import create_app_engine
from tests.support.configs import settings_for, shared_folder
from tests.support.postgres import connect, create_database, service_url
from tests.support.processes import ServiceProcess, run_python, service_environment
from tests.support.secrets import PASSWORDS
from tests.support.servers import wait_until_every_worker_is_ready
from tests.support.tls import BINARIES, TlsServer, tls_server

# The embedded PostgreSQL is built without TLS: these tests run Debian's
# PostgreSQL binaries, which .ci/run installs.
pytestmark = [
    pytest.mark.processes,
    pytest.mark.skipif(not BINARIES, reason="no PostgreSQL in /usr/lib/postgresql"),
]


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[TlsServer]:
    with shared_folder() as folder:
        async with tls_server(folder) as started:
            PASSWORDS.append(started.admin.password or "")
            yield started


@pytest.fixture
async def database(server: TlsServer) -> URL:
    return await create_database(server.admin)


def _with_tls(url: URL, mode: str, root: Path | None = None) -> URL:
    query = {"sslmode": mode} | ({"sslrootcert": str(root)} if root else {})
    return url.update_query_dict(query)


@pytest.mark.parametrize(
    ("mode", "encrypted"), [("disable", False), ("require", True), ("verify-full", True)]
)
async def test_each_sslmode_is_what_the_session_gets(
    server: TlsServer, database: URL, mode: str, encrypted: bool
) -> None:
    url = _with_tls(database, mode, server.ca if mode.startswith("verify") else None)
    engine = create_app_engine(settings_for(url))
    try:
        async with engine.connect() as connection:
            ssl = await connection.scalar(
                text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            )
    finally:
        await engine.dispose()
    assert ssl is encrypted


async def test_migrate_and_serve_with_verified_tls(
    server: TlsServer, database: URL, tmp_path: Path
) -> None:
    verified = service_url(_with_tls(database, "verify-full", server.ca))
    job = run_python("-m", "service", "migrate", url=None, DATABASE_URL=verified)
    assert job.returncode == 0, job.stderr
    process = ServiceProcess.service(
        service_environment(
            DATABASE_URL=service_url(_with_tls(database, "require")),
            MIGRATION_DATABASE_URL=service_url(_with_tls(database, "verify-ca", server.ca)),
        ),
        tmp_path / "tls.log",
        "--workers", "2",
    )  # fmt: skip
    try:
        # Both workers connected (each must have used TLS), not just the one that answered.
        wait_until_every_worker_is_ready(process, 2)
        connection = await connect(database)
        try:
            sessions = await connection.fetch(
                "SELECT s.ssl FROM pg_stat_ssl AS s JOIN pg_stat_activity AS a USING (pid)"
                " WHERE a.application_name LIKE 'platform-service app%'"
            )
        finally:
            await connection.close()
    finally:
        process.stop()
    assert sessions
    assert all(row["ssl"] for row in sessions)


def test_a_certificate_of_another_ca_is_refused_at_once(server: TlsServer, database: URL) -> None:
    untrusted = service_url(_with_tls(database, "verify-full", server.other_ca))
    refused = run_python("-m", "service", "migrate", url=None, DATABASE_URL=untrusted, timeout=60)
    assert refused.returncode == 1
    assert "migration failed (tls)" in refused.stderr
    assert "certificate verify failed" in refused.stderr
