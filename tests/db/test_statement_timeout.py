"""REQUEST_STATEMENT_TIMEOUT bounds the database time of every API request,
directly and through a transaction-pooling PgBouncer (which passes on no
startup parameter), and costs no extra statement: a write's rides on its
BEGIN; a read, one statement outside any transaction, is bounded by its
session's setting (a startup parameter directly; through the pooler, the
role's setting the operator makes, or else a transaction of its own)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL

from service.db.engines import create_app_engine
from tests.support.api import JSONAPI, create_account_over_http, document
from tests.support.configs import settings_for, shared_folder
from tests.support.pgbouncer import pgbouncer
from tests.support.postgres import connect, service_url
from tests.support.processes import OPERATOR_TOKEN, ServiceProcess, service_environment, wait_for
from tests.support.servers import wait_until_every_worker_is_ready

# Every test here starts a real process or server.
pytestmark = pytest.mark.processes

TIMEOUT = 0.5
LOCK_HELD = 15.0


# How the pooler's sessions get their timeout, the operator's way: on the role
# (here only in the test's database).
ROLE_TIMEOUT = "ALTER ROLE CURRENT_USER IN DATABASE {database} SET statement_timeout = '{ms}ms'"


@pytest.fixture(params=["direct", "pgbouncer", "pgbouncer, role's timeout"])
def server(request: pytest.FixtureRequest, migrated_database: URL) -> Iterator[ServiceProcess]:
    if request.param == "pgbouncer, role's timeout":
        asyncio.run(_set_role_timeout(migrated_database))
    with shared_folder() as folder:
        variables = {
            "OPERATOR_TOKEN": OPERATOR_TOKEN,
            "REQUEST_STATEMENT_TIMEOUT": str(TIMEOUT),
            "DATABASE_URL": service_url(migrated_database),
        }
        with _maybe_pooled(request.param, migrated_database, folder) as pooled:
            if pooled is not None:
                variables.update(
                    DATABASE_URL=service_url(pooled),
                    MIGRATION_DATABASE_URL=service_url(migrated_database),
                    DATABASE_POOLER="transaction",
                )
            process = ServiceProcess.uvicorn(
                service_environment(**variables), folder / "timeout.log", workers=2
            )
            try:
                wait_until_every_worker_is_ready(process, 2)
                yield process
            finally:
                process.stop()


class _NoPooler:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        return None


def _maybe_pooled(kind: str, url: URL, folder: Path) -> Any:
    return pgbouncer(url, folder / "pgbouncer") if kind.startswith("pgbouncer") else _NoPooler()


async def _set_role_timeout(url: URL) -> None:
    connection = await connect(url)
    try:
        await connection.execute(
            ROLE_TIMEOUT.format(database=url.database, ms=round(TIMEOUT * 1000))
        )
    finally:
        await connection.close()


async def test_a_request_waiting_past_the_timeout_is_answered_503(
    server: ServiceProcess, migrated_database: URL
) -> None:
    base = f"http://127.0.0.1:{server.port}"
    async with httpx.AsyncClient(base_url=base, timeout=LOCK_HELD * 2) as client:
        created = await client.post(
            "/v1/accounts",
            headers={"Authorization": f"Bearer {OPERATOR_TOKEN}", "Content-Type": JSONAPI},
            json=document(
                "accounts", {"name": "Slow", "owner": {"email": "o@slow.test", "role": "OWNER"}}
            ),
        )
        assert created.status_code == 201, created.text
        account_id = uuid.UUID(created.json()["data"]["id"])
        key = next(i for i in created.json()["included"] if i["type"] == "api-keys")
        headers = {
            "Authorization": f"Bearer {key['attributes']['secret']}",
            "Content-Type": JSONAPI,
        }
        # Another session holds the account's row: the rename waits for it.
        holder = await connect(migrated_database)
        try:
            async with holder.transaction():
                await holder.execute("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", account_id)
                started = time.monotonic()
                renamed = await client.patch(
                    "/v1/account", headers=headers, json=document("accounts", {"name": "Renamed"})
                )
                waited = time.monotonic() - started
        finally:
            await holder.close()
    assert renamed.status_code == 503, renamed.text
    assert renamed.headers["retry-after"]
    assert "took longer than its database time allows" in renamed.json()["errors"][0]["detail"]
    # Cancelled by the timeout, not by the lock's release (which never came first).
    assert waited < LOCK_HELD


async def test_the_callers_key_lookup_is_bounded_too(
    server: ServiceProcess, migrated_database: URL, request: pytest.FixtureRequest
) -> None:
    """A read (one statement with the caller's key check, outside any
    transaction) is bounded by its session's timeout: cancelled by the server
    (57014), not left to the client's later deadline. Through a pooler whose
    sessions have no timeout, each worker says so once and reads in a
    transaction that sets it."""
    key = create_account_over_http(server.port or 0, "Locked")
    # A worker's first reads arrive together: it asks the pooler's setting once.
    async with httpx.AsyncClient(timeout=LOCK_HELD * 2) as client:
        first = await asyncio.gather(
            *(
                client.get(
                    f"http://127.0.0.1:{server.port}/v1/configs/{uuid.uuid4()}",
                    headers={"Authorization": f"Bearer {key}"},
                )
                for _ in range(40)
            )
        )
    assert {answer.status_code for answer in first} == {404}
    holder = await connect(migrated_database)
    try:
        async with holder.transaction():
            await holder.execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            async with httpx.AsyncClient(timeout=LOCK_HELD * 2) as client:
                answer = await client.get(
                    f"http://127.0.0.1:{server.port}/v1/configs/{uuid.uuid4()}",
                    headers={"Authorization": f"Bearer {key}"},
                )
            waited = time.monotonic() - started
    finally:
        await holder.close()
    assert answer.status_code == 503, answer.text
    assert "took longer than its database time allows" in answer.json()["errors"][0]["detail"]
    assert waited < LOCK_HELD
    warnings = server.logs().count("reads run in a transaction that sets it")
    if request.node.callspec.params["server"] == "pgbouncer":
        assert 1 <= warnings <= 2, server.logs()  # at most one a worker
    else:
        assert warnings == 0, server.logs()


@pytest.mark.parametrize("pooler", ["none", "transaction"])
async def test_the_timeout_adds_no_statement(migrated_database: URL, pooler: str) -> None:
    """The statements a transaction sends, with and without the timeout: the
    same count; the timeout rides in the BEGIN's message."""
    sent: dict[float, list[str]] = {0.0: [], 2.5: []}
    for seconds, queries in sent.items():
        # A transaction pooler requires a direct migration URL (the lock's).
        direct = {"migration_database_url": service_url(migrated_database)}
        settings = settings_for(
            migrated_database,
            request_statement_timeout=seconds,
            database_pooler=pooler,
            **(direct if pooler == "transaction" else {}),
        )
        engine = create_app_engine(settings)
        try:
            async with engine.connect() as connection:
                raw = await connection.get_raw_connection()
                driver = raw.driver_connection
                assert driver is not None
                driver.add_query_logger(lambda record, into=queries: into.append(record.query))
                timeout = await connection.scalar(text("SHOW statement_timeout"))
                await connection.commit()
        finally:
            await engine.dispose()
        assert timeout == ("2500ms" if seconds else "0")
    assert len(sent[2.5]) == len(sent[0.0]), sent
    assert sent[2.5][0].startswith("BEGIN")
    assert "SET LOCAL statement_timeout = '2500ms'" in sent[2.5][0]


def test_a_request_to_a_stalled_pooler_is_answered_503(migrated_database: URL) -> None:
    """A paused PgBouncer holds every statement before it reaches PostgreSQL,
    where the statement timeout lives: the client's own deadline answers."""
    with shared_folder() as folder, pgbouncer(migrated_database, folder / "pgbouncer") as pooled:
        variables = service_environment(
            OPERATOR_TOKEN=OPERATOR_TOKEN,
            REQUEST_STATEMENT_TIMEOUT="1",
            DATABASE_URL=service_url(pooled),
            MIGRATION_DATABASE_URL=service_url(migrated_database),
            DATABASE_POOLER="transaction",
        )
        process = ServiceProcess.uvicorn(variables, folder / "stalled.log", workers=2)
        try:
            wait_until_every_worker_is_ready(process, 2)
            key = create_account_over_http(process.port or 0, "Stalled")
            asyncio.run(_pooler_command(pooled, f"PAUSE {migrated_database.database}"))
            try:
                # Bounded: before the client deadline this waited for PgBouncer's
                # query_wait_timeout (120 s), past the client's 60 s.
                stalled = httpx.get(
                    f"http://127.0.0.1:{process.port}/v1/account",
                    headers={"Authorization": f"Bearer {key}"},
                    timeout=60,
                )
            finally:
                asyncio.run(_pooler_command(pooled, f"RESUME {migrated_database.database}"))
        finally:
            process.stop()
    assert stalled.status_code == 503, stalled.text
    assert stalled.headers["retry-after"]


async def _pooler_command(pooled: URL, command: str) -> None:
    console = await asyncpg.connect(
        host=pooled.host,
        port=pooled.port,
        user=pooled.username,
        password=pooled.password,
        database="pgbouncer",
        statement_cache_size=0,
    )
    try:
        await console.execute(command)
    finally:
        await console.close()


async def test_a_bootstrap_read_cut_by_the_request_timeout_waits_instead_of_failing(
    migrated_database: URL,
) -> None:
    """A worker's first read of the revision is no request: a busy server may
    hold it past REQUEST_STATEMENT_TIMEOUT, and it must not fail the worker's
    migration (and so stop the server) for that: it waits and retries, as
    for an absent database. Here a lock holds it until it has been cut by the
    request's timeout at least once."""
    variables = service_environment(
        OPERATOR_TOKEN=OPERATOR_TOKEN,
        REQUEST_STATEMENT_TIMEOUT=str(TIMEOUT),
        DATABASE_URL=service_url(migrated_database),
    )
    holder = await connect(migrated_database)
    with shared_folder() as folder:
        process: ServiceProcess | None = None
        try:
            async with holder.transaction():
                await holder.execute("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE")
                started = ServiceProcess.uvicorn(variables, folder / "busy.log", workers=2)
                process = started
                # A worker's read was cut by the request's timeout, and waits.
                wait_for(
                    lambda: (
                        "statement timeout" in started.logs()
                        or "migration failed" in started.logs()
                    ),
                    60,
                    "a worker's first read to meet the lock",
                )
                await asyncio.sleep(TIMEOUT * 2)
            wait_until_every_worker_is_ready(process, 2)
            process.assert_running()
            assert "migration failed" not in process.logs(), process.logs()
        finally:
            await holder.close()
            if process is not None:
                process.stop()
