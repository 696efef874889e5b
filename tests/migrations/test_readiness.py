"""The real lifespan in-process: gating, the lock holder, the fast path, failures."""

from __future__ import annotations

import logging
import uuid
from urllib.parse import quote, quote_plus

import httpx
import pytest
from alembic_lockstep import lock
from sqlalchemy.engine import URL

from tests.support.configs import eventually, scenario_config, settings_for
from tests.support.postgres import connect, reading_configs
from tests.support.processes import OPERATOR, OPERATOR_TOKEN
from tests.support.readiness import LOCK_NAME, holding_lock, readiness, running_app, wait_for_phase
from tests.support.revisions import HEAD


async def create_account(client: httpx.AsyncClient) -> str:
    """Create an account through the operator route; returns its first API key."""
    response = await client.post(
        "/v1/accounts",
        headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
        json={
            "data": {
                "type": "accounts",
                "attributes": {"name": "Acme", "owner": {"email": "o@acme.test", "role": "OWNER"}},
            }
        },
    )
    assert response.status_code == 201, response.text
    (key,) = [item for item in response.json()["included"] if item["type"] == "api-keys"]
    return str(key["attributes"]["secret"])


async def test_api_is_gated_until_the_schema_is_at_head(empty_database: URL) -> None:
    async with (
        holding_lock(empty_database) as holder_pid,
        running_app(settings_for(empty_database)) as client,
    ):
        waiting = await wait_for_phase(client, "waiting_for_lock")
        assert (await client.get("/livez")).status_code == 200
        status, body = await readiness(client)
        assert status == 503
        assert body["status"] == "unready"
        assert body["current_revision"] is None
        assert body["target_revision"] == HEAD
        assert waiting["lock_holder"]["pid"] == holder_pid

        refused = await client.get("/v1/service")
        assert refused.status_code == 503
        assert refused.headers["content-type"] == "application/vnd.api+json"
        assert int(refused.headers["retry-after"]) > 0
        assert refused.json()["errors"][0]["status"] == "503"
        assert "waiting_for_lock" in refused.json()["errors"][0]["detail"]
        # The gate comes before the key and before the body: a read whose
        # route takes the key, and a write with a body that is not JSON.
        unknown = {"Authorization": "Bearer psk_" + "A" * 43}
        for gated in (
            await client.get(f"/v1/configs/{uuid.uuid4()}"),
            await client.get("/api/v1/configs/some-key", headers=unknown),
            await client.post(
                "/v1/configs",
                content=b"{not json",
                headers={**unknown, "Content-Type": "application/vnd.api+json"},
            ),
        ):
            assert gated.status_code == 503, gated.text
            assert "waiting_for_lock" in gated.json()["errors"][0]["detail"]

    # Leaving the first block released the lock: a new app on the same database migrates.
    async with running_app(settings_for(empty_database)) as client:
        await wait_for_phase(client, "ready")
        status, body = await readiness(client)
        assert (status, body["status"]) == (200, "ready")
        assert body["current_revision"] == body["target_revision"] == HEAD
        assert (await client.get("/livez")).status_code == 200
        key = await create_account(client)
        served = await client.get("/v1/service", headers={"Authorization": f"Bearer {key}"})
        assert served.status_code == 200
        assert served.json()["data"]["attributes"]["schema_revision"] == HEAD


async def test_lock_holder_is_reported_then_migration_runs_after_release(
    empty_database: URL,
) -> None:
    connection = await connect(empty_database)
    await connection.execute("SET application_name = 'holder-from-test'")
    assert await connection.fetchval("SELECT pg_try_advisory_lock($1)", lock.lock_key(LOCK_NAME))
    holder_pid = await connection.fetchval("SELECT pg_backend_pid()")
    async with running_app(settings_for(empty_database)) as client:
        body = await wait_for_phase(client, "waiting_for_lock")
        holder = body["lock_holder"]
        assert holder["pid"] == holder_pid
        assert holder["application_name"] == "holder-from-test"
        assert holder["client_addr"] in {"127.0.0.1", None}
        assert holder["since"]
        assert (await client.get("/livez")).status_code == 200

        await connection.execute("SELECT pg_advisory_unlock($1)", lock.lock_key(LOCK_NAME))
        ready = await wait_for_phase(client, "ready")
        assert ready["migrated_here"] is True
        assert ready.get("lock_holder") is None
    await connection.close()


async def test_at_head_becomes_ready_without_taking_the_lock(migrated_database: URL) -> None:
    # The lock is held elsewhere for the whole test: only the fast path can get ready.
    async with (
        holding_lock(migrated_database),
        running_app(settings_for(migrated_database)) as client,
    ):
        body = await wait_for_phase(client, "ready")
        assert body["migrated_here"] is False


async def test_lock_name_setting_changes_the_key(empty_database: URL) -> None:
    settings = settings_for(empty_database, migration_lock_name="another-service")
    # The configured name's lock is the one the bootstrap waits for...
    async with (
        holding_lock(empty_database, "another-service") as holder_pid,
        running_app(settings) as client,
    ):
        waiting = await wait_for_phase(client, "waiting_for_lock")
        assert waiting["lock_holder"]["pid"] == holder_pid
    # ...and the default name's lock, held now, is another lock: it migrates.
    async with holding_lock(empty_database), running_app(settings) as client:
        ready = await wait_for_phase(client, "ready")
        assert ready["migrated_here"] is True
        assert ready["current_revision"] == HEAD


async def test_without_migrate_on_startup_waits_for_another_process(empty_database: URL) -> None:
    from alembic_lockstep.commands import migrate

    from service.bootstrap import migration_config

    async with running_app(settings_for(empty_database, migrate_on_startup=False)) as client:
        body = await wait_for_phase(client, "waiting_for_schema")
        assert body["current_revision"] is None
        assert (await client.get("/v1/service")).status_code == 503
        assert await migrate(migration_config(settings_for(empty_database)), None) == 0
        body = await wait_for_phase(client, "ready")
        assert body["migrated_here"] is False
        assert (await client.get("/v1/service")).status_code == 401  # served: asks for a key


async def test_failed_revision_reports_failed_and_keeps_the_schema(empty_database: URL) -> None:
    settings = settings_for(empty_database, alembic_config=scenario_config("failing"))
    async with running_app(settings) as client:
        body = await wait_for_phase(client, "failed")
        assert "no_such_table" in body["error"]
        assert "42P01" in body["error"]
        # Revisions before the failing one committed one by one; the failing one left nothing.
        assert body["current_revision"] == HEAD
        assert (await client.get("/v1/service")).status_code == 503
    connection = await connect(empty_database)
    try:
        assert await connection.fetchval("SELECT to_regclass('failing_marker')") is None
        assert (
            await connection.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database ="
                " (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            == 0
        )
    finally:
        await connection.close()


async def test_database_ahead_of_the_code_is_refused(migrated_database: URL) -> None:
    connection = await connect(migrated_database)
    await connection.execute("UPDATE alembic_version SET version_num = 'f00dfeed1234'")
    await connection.close()
    async with running_app(settings_for(migrated_database)) as client:
        body = await wait_for_phase(client, "failed")
        assert "f00dfeed1234" in body["error"]
        assert "unknown to this code" in body["error"]


async def test_migrating_inside_the_app_leaves_its_loggers_enabled(empty_database: URL) -> None:
    existing = logging.getLogger("service.some_module_loaded_before")
    async with running_app(settings_for(empty_database)) as client:
        await wait_for_phase(client, "ready")
    assert existing.disabled is False
    assert logging.getLogger("alembic_lockstep.bootstrap").disabled is False


@pytest.mark.parametrize(
    "secret",
    # Plain; with the characters a URL must escape (so its escaped spelling is
    # looked for too); and beyond ASCII.
    ["s3cr3t-Pa55word", "p@ss:w/rd%?#&=", "pässwörd-ü"],
)
@pytest.mark.parametrize(
    ("failure", "phase"),
    # A server that is not there is waited out; one that refuses the
    # password is final: both answer readiness with the error in its details.
    [("closed port", "waiting_for_database"), ("wrong password", "failed")],
)
async def test_database_password_never_reaches_readiness(
    admin_url: URL, secret: str, failure: str, phase: str
) -> None:
    """The details quote the driver's error, which names the address or the
    user: the place a password would show if a URL were rendered with it."""
    url = admin_url.set(password=secret)
    if failure == "closed port":
        url = url.set(host="127.0.0.1", port=1)
    spellings = {secret, quote(secret, safe=""), quote_plus(secret)}
    async with running_app(settings_for(url)) as client:
        body = await wait_for_phase(client, phase)
        details = (await client.get("/readyz", headers=OPERATOR)).text
        public = (await client.get("/v1/service")).text
    named = "127.0.0.1', 1" if failure == "closed port" else f'user \\"{url.username}\\"'
    assert named in details, details
    assert body["error"]
    for spelling in spellings:
        assert spelling not in details
        assert spelling not in public


async def test_revision_that_hits_lock_timeout_is_retried(migrated_database: URL) -> None:
    settings = settings_for(
        migrated_database,
        alembic_config=scenario_config("locking"),
        migration_lock_timeout=0.2,
        migration_lock_retries=20,
    )
    async with running_app(settings) as client:
        async with reading_configs(migrated_database):

            async def retried() -> bool:
                _, body = await readiness(client)
                return bool(
                    body["phase"] == "migrating" and body["migration"]["lock_timeout_retries"] >= 1
                )

            await eventually(retried)
            assert (await client.get("/livez")).status_code == 200
        body = await wait_for_phase(client, "ready")
        assert body["current_revision"] == "test_locking"


async def test_revision_that_keeps_hitting_lock_timeout_fails(migrated_database: URL) -> None:
    settings = settings_for(
        migrated_database,
        alembic_config=scenario_config("locking"),
        migration_lock_timeout=0.1,
        migration_lock_retries=1,
    )
    async with reading_configs(migrated_database), running_app(settings) as client:
        body = await wait_for_phase(client, "failed")
        assert "55P03" in body["error"]
        assert body["current_revision"] == HEAD
