"""Keys and roles: a key never outgrows its maker, nobody acts on the keys of
a user who outranks them, the account always keeps a key that acts as OWNER,
and the operator can recover an account whose owners lost every key."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import URL

from tests.support.api import JSONAPI, Tenant, api_client, document, new_tenant
from tests.support.postgres import connect
from tests.support.processes import (
    OPERATOR_TOKEN,
    PROCESS_OUTPUTS,
    PROJECT_ROOT,
    run_python,
    service_environment,
)
from tests.support.revisions import HEAD
from tests.support.secrets import API_KEY


@pytest.fixture
async def tenant(module_client: httpx.AsyncClient) -> Tenant:
    """An account of its own in the module's shared app (tests/conftest.py)."""
    return await new_tenant(module_client)


async def owner_key_id(tenant: Tenant) -> str:
    keys = (await tenant.call("GET", "/v1/api-keys")).json()["data"]
    owned = [k for k in keys if k["relationships"]["user"]["data"]["id"] == tenant.owner_id]
    return str(owned[0]["id"])


async def test_an_admin_cannot_revoke_or_make_keys_of_the_owner(tenant: Tenant) -> None:
    _, admin = await tenant.user_with_key("ADMIN")
    key_id = await owner_key_id(tenant)
    revoke = await tenant.call("DELETE", f"/v1/api-keys/{key_id}", admin)
    assert revoke.status_code == 403, revoke.text
    assert "OWNER" in revoke.json()["errors"][0]["detail"]
    make = await tenant.call(
        "POST", "/v1/api-keys", admin, document("api-keys", {"name": "k"}, user=tenant.owner_id)
    )
    assert make.status_code == 403
    assert (await tenant.call("GET", "/v1/account")).status_code == 200


async def test_a_key_never_gains_its_users_later_promotions(tenant: Tenant) -> None:
    """An ADMIN's key for a MEMBER stays capped at ADMIN when the MEMBER becomes OWNER."""
    admin_id, admin = await tenant.user_with_key("ADMIN")
    member = await tenant.create("users", {"email": "m@example.test", "role": "MEMBER"})
    made = await tenant.create("api-keys", {"name": "by admin"}, admin, user=member["id"])
    assert made["attributes"]["max_role"] == "ADMIN"
    assert made["relationships"]["created_by"]["data"] == {"type": "users", "id": admin_id}
    key = made["attributes"]["secret"]
    promoted = await tenant.call(
        "PATCH",
        f"/v1/users/{member['id']}",
        body=document("users", {"role": "OWNER"}, member["id"]),
    )
    assert promoted.status_code == 200
    rename = await tenant.call("PATCH", "/v1/account", key, document("accounts", {"name": "Mine"}))
    assert rename.status_code == 403
    assert "acts as ADMIN" in rename.json()["errors"][0]["detail"]
    assert (await tenant.call("GET", "/v1/api-keys", key)).status_code == 200
    grant = await tenant.call(
        "POST", "/v1/users", key, document("users", {"email": "o2@example.test", "role": "OWNER"})
    )
    assert grant.status_code == 403


async def test_a_key_falls_with_its_users_demotion(tenant: Tenant) -> None:
    user_id, key = await tenant.user_with_key("ADMIN")
    assert (await tenant.call("GET", "/v1/api-keys", key)).status_code == 200
    demoted = await tenant.call(
        "PATCH", f"/v1/users/{user_id}", body=document("users", {"role": "VIEWER"}, user_id)
    )
    assert demoted.status_code == 200
    assert (await tenant.call("GET", "/v1/api-keys", key)).status_code == 403
    assert (await tenant.call("GET", "/v1/configs", key)).status_code == 200


async def test_the_account_always_keeps_a_key_that_acts_as_owner(tenant: Tenant) -> None:
    first = await owner_key_id(tenant)
    last = await tenant.call("DELETE", f"/v1/api-keys/{first}")
    assert last.status_code == 409, last.text
    second = await tenant.create("api-keys", {"name": "second"})
    assert second["attributes"]["max_role"] == "OWNER"
    assert (await tenant.call("DELETE", f"/v1/api-keys/{first}")).status_code == 204
    secret = second["attributes"]["secret"]
    refused = await tenant.call("DELETE", f"/v1/api-keys/{second['id']}", secret)
    assert refused.status_code == 409

    # A second OWNER without an OWNER key: the first may not leave, or be demoted.
    other = await tenant.create("users", {"email": "o2@example.test", "role": "OWNER"}, secret)
    leave = await tenant.call("DELETE", f"/v1/users/{tenant.owner_id}", secret)
    assert leave.status_code == 409
    demote = await tenant.call(
        "PATCH",
        f"/v1/users/{tenant.owner_id}",
        secret,
        document("users", {"role": "ADMIN"}, tenant.owner_id),
    )
    assert demote.status_code == 409
    # Once the other OWNER has a key of their own, the first may go.
    await tenant.create("api-keys", {"name": "theirs"}, secret, user=other["id"])
    assert (await tenant.call("DELETE", f"/v1/users/{tenant.owner_id}", secret)).status_code == 204


async def test_a_revoked_key_stays_revoked_and_revoking_twice_is_harmless(tenant: Tenant) -> None:
    _, key = await tenant.user_with_key("MEMBER")
    keys = (await tenant.call("GET", "/v1/api-keys")).json()["data"]
    key_id = next(k["id"] for k in keys if k["attributes"]["prefix"] == key[:12])
    assert (await tenant.call("DELETE", f"/v1/api-keys/{key_id}")).status_code == 204
    assert (await tenant.call("DELETE", f"/v1/api-keys/{key_id}")).status_code == 204
    assert (await tenant.call("GET", "/v1/configs", key)).status_code == 401


# --- keys made before revisions 0010 and 0011 ----------------------------------------

BEFORE = "0009_migration_audit"


@pytest.mark.processes
async def test_keys_made_before_the_cap_get_their_users_role_and_old_code_keeps_working(
    empty_database: URL,
) -> None:
    """Keys existing at the upgrade are capped at their user's role then (0011);
    a key the previous release makes later (no cap) acts with its user's role."""
    assert run_python("-m", "alembic", "upgrade", BEFORE, url=empty_database).returncode == 0
    connection = await connect(empty_database)
    account = await connection.fetchval("INSERT INTO accounts (name) VALUES ('Old') RETURNING id")
    users = {}
    for role in ("OWNER", "MEMBER"):
        users[role] = await connection.fetchval(
            "INSERT INTO users (account_id, email, role, auth_provider, auth_subject) "
            "VALUES ($1, $2, $3, 'email', $2) RETURNING id",
            account,
            f"{role.lower()}@old.test",
            role,
        )
    old_key = "psk_" + "a" * 43
    await _insert_key_the_old_way(connection, account, users["MEMBER"], old_key)
    upgraded = run_python("-m", "alembic", "upgrade", "head", url=empty_database)
    assert upgraded.returncode == 0, upgraded.stderr
    assert await connection.fetchval("SELECT max_role FROM api_keys") == "MEMBER"
    # The previous release, still running during the rollout, writes no cap.
    later_key = "psk_" + "b" * 43
    await _insert_key_the_old_way(connection, account, users["OWNER"], later_key)
    await connection.execute("UPDATE users SET role = 'ADMIN' WHERE id = $1", users["MEMBER"])
    await connection.close()
    async with api_client(empty_database) as client:
        capped = await client.get("/v1/api-keys", headers={"Authorization": f"Bearer {old_key}"})
        assert capped.status_code == 403  # its user is ADMIN now; the key stays MEMBER
        uncapped = await client.patch(
            "/v1/account",
            headers={"Authorization": f"Bearer {later_key}", "Content-Type": "application/json"},
            json=document("accounts", {"name": "Renamed"}),
        )
        assert uncapped.status_code == 200, uncapped.text


async def _insert_key_the_old_way(
    connection: asyncpg.Connection, account: uuid.UUID, user: uuid.UUID, secret: str
) -> None:
    await connection.execute(
        "INSERT INTO api_keys (account_id, user_id, name, prefix, secret_hash) "
        "VALUES ($1, $2, 'old', $3, $4)",
        account,
        user,
        secret[:12],
        hashlib.sha256(secret.encode()).digest(),
    )


# --- the operator's recovery ------------------------------------------------------


def accounts_command(url: URL, *arguments: str) -> subprocess.CompletedProcess[str]:
    """`python -m service accounts ...`. Its output holds a new key on purpose:
    it is kept for the end-of-run secrets scan with the key masked."""
    environment = service_environment(DATABASE_URL=url.render_as_string(hide_password=False))
    result = subprocess.run(
        [sys.executable, "-m", "service", "accounts", *arguments],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    PROCESS_OUTPUTS.append(API_KEY.sub("psk_<recovered>", result.stdout) + result.stderr)
    return result


@pytest.mark.processes
async def test_the_operator_recovers_an_account_whose_owner_lost_every_key(
    migrated_database: URL,
) -> None:
    async with api_client(migrated_database) as client:
        tenant = await new_tenant(client)
    connection = await connect(migrated_database)
    await connection.execute("UPDATE api_keys SET revoked_at = now()")  # every key lost
    recovered = accounts_command(
        migrated_database, "recover", tenant.account_id, "--reason", "owner lost every key"
    )
    assert recovered.returncode == 0, recovered.stderr
    secret = recovered.stdout.strip()
    assert API_KEY.fullmatch(secret), "standard output holds the secret alone"
    assert secret not in recovered.stderr
    async with api_client(migrated_database) as client:
        renamed = await client.patch(
            "/v1/account",
            headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
            json=document("accounts", {"name": "Recovered"}),
        )
        assert renamed.status_code == 200, renamed.text
    audit = await connection.fetchrow("SELECT * FROM operator_audit")
    key = await connection.fetchrow("SELECT * FROM api_keys WHERE revoked_at IS NULL")
    await connection.close()
    assert audit["action"] == "accounts recover"
    assert str(audit["account_id"]) == tenant.account_id
    assert str(audit["user_id"]) == tenant.owner_id
    assert audit["api_key_id"] == key["id"]
    assert audit["reason"] == "owner lost every key"
    assert audit["database_user"]
    assert audit["operator"]
    assert audit["host"]
    assert key["max_role"] == "OWNER"
    assert key["created_by_user_id"] is None


@pytest.mark.processes
async def test_recovery_refuses_what_it_cannot_do_and_writes_nothing(
    migrated_database: URL,
) -> None:
    async with api_client(migrated_database) as client:
        tenant = await new_tenant(client)
        await tenant.create("users", {"email": "second@owner.test", "role": "OWNER"})
    unknown = accounts_command(migrated_database, "recover", str(uuid.uuid4()), "--reason", "r")
    assert unknown.returncode == 1
    assert "no account with id" in unknown.stderr
    several = accounts_command(migrated_database, "recover", tenant.account_id, "--reason", "r")
    assert several.returncode == 1
    assert "second@owner.test" in several.stderr
    assert "--email" in several.stderr
    for arguments in (
        ("recover", tenant.account_id),  # no reason
        ("recover", tenant.account_id, "--reason", "not UTF-8: \udcff"),
        ("recover", "not-an-id", "--reason", "r"),
    ):
        refused = accounts_command(migrated_database, *arguments)
        assert refused.returncode == 2, arguments
    connection = await connect(migrated_database)
    assert await connection.fetchval("SELECT count(*) FROM operator_audit") == 0
    assert await connection.fetchval("SELECT count(*) FROM api_keys") == 1
    chosen = accounts_command(
        migrated_database,
        "recover",
        tenant.account_id,
        "--reason",
        "r",
        "--email",
        "SECOND@owner.test",
        "--json",
    )
    assert chosen.returncode == 0, chosen.stderr
    report = json.loads(chosen.stdout)
    assert report["email"] == "second@owner.test"
    assert await connection.fetchval("SELECT count(*) FROM operator_audit") == 1
    await connection.close()


@pytest.mark.processes
def test_accounts_is_a_group_of_commands() -> None:
    usage = run_python("-m", "service", "accounts", "--help")
    assert usage.returncode == 0
    assert "recover" in usage.stdout
    missing = run_python("-m", "service", "accounts")
    assert missing.returncode == 2


@pytest.mark.processes
async def test_the_key_cap_backfill_runs_again_after_failing_past_its_autocommit_block(
    empty_database: URL,
) -> None:
    """0011's autocommit block commits its batches while the revision is not yet
    recorded: failing (or killed) after that, it must run again from the start.
    Here its concurrent index build fails the first time: a table holds the
    index's name."""
    expand = "0010_key_makers_operator_audit"
    assert run_python("-m", "alembic", "upgrade", expand, url=empty_database).returncode == 0
    connection = await connect(empty_database)
    await connection.execute("CREATE TABLE api_keys_created_by_user_id_idx (x int)")
    failed = run_python("-m", "alembic", "upgrade", "head", url=empty_database)
    assert failed.returncode != 0
    assert await connection.fetchval("SELECT version_num FROM alembic_version") == expand
    await connection.execute("DROP TABLE api_keys_created_by_user_id_idx")
    again = run_python("-m", "alembic", "upgrade", "head", url=empty_database)
    assert again.returncode == 0, again.stderr[-3000:]
    assert await connection.fetchval("SELECT version_num FROM alembic_version") == HEAD
    assert await connection.fetchval(
        "SELECT bool_and(convalidated) FROM pg_constraint WHERE conrelid = 'api_keys'::regclass"
    )
    assert await connection.fetchval(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = 'api_keys_created_by_user_id_idx'::regclass"
    )
    await connection.close()


async def test_two_authorization_headers_are_refused_whichever_comes_first(
    tenant: Tenant,
) -> None:
    """Which of two credentials was meant is not known: neither is taken,
    whatever the other one is (a viewer's key with an owner's, the operator
    token with a key); a probe is answered as if none were sent."""
    _, viewer = await tenant.user_with_key("VIEWER")
    pairs = {
        "a viewer's key, then the owner's": (viewer, tenant.owner_key),
        "the owner's key, then a viewer's": (tenant.owner_key, viewer),
        "the owner's key, then an unknown one": (tenant.owner_key, "psk_" + "u" * 43),
        "the operator token, then a key": (OPERATOR_TOKEN, tenant.owner_key),
    }
    paths = {
        "a one-statement read": ("GET", "/v1/configs"),
        "a role-checked write": ("POST", "/v1/users"),
        "the SDK's list": ("GET", "/api/v1/configs"),
        "an operator route": ("POST", "/v1/accounts"),
    }
    before = (await tenant.call("GET", "/v1/users")).json()["data"]
    for pair_name, (first, second) in pairs.items():
        for path_name, (method, path) in paths.items():
            answer = await tenant.client.request(
                method,
                path,
                headers=[
                    ("Authorization", f"Bearer {first}"),
                    ("Authorization", f"Bearer {second}"),
                    ("Content-Type", JSONAPI),
                ],
                json=document("users", {"email": "twice@example.test", "role": "VIEWER"}),
            )
            assert answer.status_code == 400, (pair_name, path_name, answer.text)
            detail = answer.json()["errors"][0]["detail"]
            assert "Authorization header is given more than once" in detail
    assert (await tenant.call("GET", "/v1/users")).json()["data"] == before
    probe = await tenant.client.get(
        "/readyz",
        headers=[("Authorization", f"Bearer {OPERATOR_TOKEN}"), ("Authorization", "Bearer x")],
    )
    assert probe.status_code == 200
    assert probe.json() == (await tenant.client.get("/readyz")).json()
