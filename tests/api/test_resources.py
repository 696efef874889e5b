"""Every endpoint through the real lifespan: success cases and refusals."""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import URL

from tests.support.api import JSONAPI, Tenant, api_client, document, new_tenant
from tests.support.postgres import connect
from tests.support.processes import OPERATOR_TOKEN

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


@pytest.fixture
def client(module_client: httpx.AsyncClient) -> httpx.AsyncClient:
    """The module's shared app (tests/conftest.py): each test makes its own account."""
    return module_client


@pytest.fixture
async def tenant(client: httpx.AsyncClient) -> Tenant:
    return await new_tenant(client)


async def test_account_creation_returns_owner_environments_and_a_key_once(
    client: httpx.AsyncClient, module_database: URL
) -> None:
    response = await client.post(
        "/v1/accounts",
        headers={"Authorization": f"Bearer {OPERATOR_TOKEN}", "Content-Type": JSONAPI},
        json=document(
            "accounts", {"name": "Acme", "owner": {"email": "Boss@Acme.test", "role": "OWNER"}}
        ),
    )
    assert response.status_code == 201
    assert response.headers["content-type"] == JSONAPI
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    account = body["data"]
    assert account["type"] == "accounts"
    uuid.UUID(account["id"])
    assert RFC3339_UTC.match(account["attributes"]["created_at"])
    kinds = sorted(item["type"] for item in body["included"])
    assert kinds == ["api-keys", "environments", "environments", "environments", "users"]
    owner = next(item for item in body["included"] if item["type"] == "users")
    assert owner["attributes"]["role"] == "OWNER"
    assert owner["attributes"]["auth_provider"] == "email"
    assert owner["attributes"]["auth_subject"] == "boss@acme.test"
    environments = sorted(
        (item["attributes"]["position"], item["attributes"]["key"])
        for item in body["included"]
        if item["type"] == "environments"
    )
    assert environments == [(0, "development"), (1, "staging"), (2, "production")]
    key = next(item for item in body["included"] if item["type"] == "api-keys")
    secret = key["attributes"]["secret"]
    assert secret.startswith("psk_")
    assert key["attributes"]["prefix"] == secret[:12]

    # Stored as a digest only, and never shown again.
    connection = await connect(module_database)
    stored = await connection.fetchrow(
        "SELECT prefix, secret_hash FROM api_keys WHERE id = $1", uuid.UUID(key["id"])
    )
    assert bytes(stored["secret_hash"]) == hashlib.sha256(secret.encode()).digest()
    dump = await connection.fetchval("SELECT string_agg(t::text, '') FROM api_keys t")
    assert secret not in dump
    await connection.close()
    listed = await client.get("/v1/api-keys", headers={"Authorization": f"Bearer {secret}"})
    assert secret not in listed.text
    assert "secret" not in listed.json()["data"][0]["attributes"]
    assert "secret_hash" not in listed.text


@pytest.mark.parametrize(
    ("authorization", "status"),
    [(None, 401), ("Bearer wrong-token-wrong-token-wrong-token", 401), ("Basic abc", 401)],
)
async def test_account_creation_needs_the_operator_token(
    client: httpx.AsyncClient, authorization: str | None, status: int
) -> None:
    headers = {"Content-Type": JSONAPI} | (
        {"Authorization": authorization} if authorization else {}
    )
    body = document(
        "accounts", {"name": "Acme", "owner": {"email": "o@acme.test", "role": "OWNER"}}
    )
    response = await client.post("/v1/accounts", headers=headers, json=body)
    assert response.status_code == status
    assert response.json()["errors"][0]["status"] == str(status)


async def test_account_creation_is_disabled_without_an_operator_token(
    module_database: URL,
) -> None:
    async with api_client(module_database, operator_token=None) as client:
        body = document(
            "accounts", {"name": "Acme", "owner": {"email": "o@acme.test", "role": "OWNER"}}
        )
        response = await client.post(
            "/v1/accounts",
            headers={"Authorization": "Bearer anything", "Content-Type": JSONAPI},
            json=body,
        )
        assert response.status_code == 403
        assert "OPERATOR_TOKEN" in response.json()["errors"][0]["detail"]


async def test_own_account_read_and_renamed_by_owner_only(tenant: Tenant) -> None:
    account = await tenant.call("GET", "/v1/account")
    assert account.json()["data"]["id"] == tenant.account_id
    renamed = await tenant.call(
        "PATCH", "/v1/account", body=document("accounts", {"name": "Acme Two"})
    )
    assert renamed.status_code == 200
    assert renamed.json()["data"]["attributes"]["name"] == "Acme Two"
    _, admin_key = await tenant.user_with_key("ADMIN")
    refused = await tenant.call(
        "PATCH", "/v1/account", admin_key, document("accounts", {"name": "Nope"})
    )
    assert refused.status_code == 403
    assert (await tenant.call("GET", "/v1/account")).json()["data"]["attributes"][
        "name"
    ] == "Acme Two"


async def test_requests_without_a_valid_key_are_refused(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer psk_short"},
        {"Authorization": f"Bearer {tenant.owner_key[:-1]}x"},
        {"Authorization": f"Token {tenant.owner_key}"},
    ):
        response = await client.get("/v1/users", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["errors"][0]["status"] == "401"


async def test_users_create_list_filter_get_update_delete(tenant: Tenant) -> None:
    created = await tenant.create(
        "users", {"email": "Ada@Example.test", "role": "MEMBER", "attributes": {"team": "core"}}
    )
    assert created["attributes"]["auth_subject"] == "ada@example.test"
    assert created["attributes"]["attributes"] == {"team": "core"}
    await tenant.create(
        "users",
        {
            "email": "bob@example.test",
            "role": "VIEWER",
            "auth_provider": "cognito",
            "auth_subject": "sub-123",
        },
    )

    by_email = await tenant.call("GET", "/v1/users", params={"filter[email]": "ADA@example.TEST"})
    assert [item["id"] for item in by_email.json()["data"]] == [created["id"]]
    viewers = await tenant.call("GET", "/v1/users", params={"filter[role]": "VIEWER"})
    assert [item["attributes"]["auth_subject"] for item in viewers.json()["data"]] == ["sub-123"]
    assert (await tenant.call("GET", f"/v1/users/{created['id']}")).json()["data"]["attributes"][
        "email"
    ] == "Ada@Example.test"

    promoted = await tenant.call(
        "PATCH",
        f"/v1/users/{created['id']}",
        body=document("users", {"role": "ADMIN"}, created["id"]),
    )
    assert promoted.status_code == 200
    assert promoted.json()["data"]["attributes"]["role"] == "ADMIN"
    assert (await tenant.call("DELETE", f"/v1/users/{created['id']}")).status_code == 204
    assert (await tenant.call("GET", f"/v1/users/{created['id']}")).status_code == 404


async def test_user_conflicts_and_invalid_values(tenant: Tenant) -> None:
    await tenant.create("users", {"email": "dup@example.test"})
    duplicate = await tenant.call(
        "POST", "/v1/users", body=document("users", {"email": "DUP@example.test"})
    )
    assert duplicate.status_code == 409
    assert duplicate.json()["errors"][0]["source"]["pointer"] == "/data/attributes/email"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"email": "not-an-email"}, "/data/attributes/email"),
        ({"email": "x@example.test", "role": "GOD"}, "/data/attributes/role"),
        ({"email": "x@example.test", "colour": "blue"}, "/data/attributes/colour"),
        ({"role": "MEMBER"}, "/data/attributes/email"),
        (
            {"email": "x@example.test", "attributes": ["not", "an", "object"]},
            "/data/attributes/attributes",
        ),
    ]
    for attributes, pointer in cases:
        refused = await tenant.call("POST", "/v1/users", body=document("users", attributes))
        assert refused.status_code == 422, attributes
        assert pointer in [error["source"]["pointer"] for error in refused.json()["errors"]], (
            refused.json()
        )


async def test_last_owner_cannot_be_removed_or_demoted(tenant: Tenant) -> None:
    demote = await tenant.call(
        "PATCH",
        f"/v1/users/{tenant.owner_id}",
        body=document("users", {"role": "ADMIN"}, tenant.owner_id),
    )
    assert demote.status_code == 409
    assert (await tenant.call("DELETE", f"/v1/users/{tenant.owner_id}")).status_code == 409
    second_owner, second_key = await tenant.user_with_key("OWNER")
    assert (
        await tenant.call("DELETE", f"/v1/users/{tenant.owner_id}", second_key)
    ).status_code == 204
    assert (await tenant.call("DELETE", f"/v1/users/{second_owner}", second_key)).status_code == 409


async def test_admins_cannot_grant_or_touch_owners(tenant: Tenant) -> None:
    _, admin_key = await tenant.user_with_key("ADMIN")
    grant = await tenant.call(
        "POST",
        "/v1/users",
        admin_key,
        document("users", {"email": "new@example.test", "role": "OWNER"}),
    )
    assert grant.status_code == 403
    touch = await tenant.call(
        "PATCH",
        f"/v1/users/{tenant.owner_id}",
        admin_key,
        document("users", {"role": "VIEWER"}, tenant.owner_id),
    )
    assert touch.status_code == 403
    key_for_owner = await tenant.call(
        "POST", "/v1/api-keys", admin_key, document("api-keys", {"name": "k"}, user=tenant.owner_id)
    )
    assert key_for_owner.status_code == 403


async def _environment_keys(tenant: Tenant, query: str) -> list[str]:
    """Every environment of the account, following links.next page by page."""
    keys: list[str] = []
    link: str | None = f"/v1/environments?{query}"
    while link:
        page = await tenant.call("GET", link)
        assert page.status_code == 200, page.text
        keys += [item["attributes"]["key"] for item in page.json()["data"]]
        link = page.json()["links"]["next"]
    return keys


async def test_environments_are_listed_by_position(tenant: Tenant) -> None:
    # Made after the account's three (positions 0, 1, 2), in the opposite
    # order to their positions: creation order cannot pass for position order.
    await tenant.create("environments", {"key": "late", "name": "Late", "position": 9})
    await tenant.create("environments", {"key": "early", "name": "Early", "position": 0})
    # The account's three share one created_at (one transaction): position decides;
    # a tie in position goes to the earlier made (development before early).
    in_order = ["development", "early", "staging", "production", "late"]
    first = await tenant.call("GET", "/v1/environments")
    assert [item["attributes"]["key"] for item in first.json()["data"]] == in_order
    assert await _environment_keys(tenant, "page[size]=1") == in_order
    assert await _environment_keys(tenant, "page[size]=2&sort=-position") == in_order[::-1]
    by_creation = await _environment_keys(tenant, "page[size]=2&sort=created_at")
    assert by_creation[-2:] == ["late", "early"]
    # A cursor names its row, whatever the order it came from: the next
    # page in another order goes on after that row in that order.
    page = await tenant.call("GET", "/v1/environments?page[size]=1&sort=created_at")
    cursor = httpx.URL(page.json()["links"]["next"]).params["page[after]"]
    first_made = page.json()["data"][0]["attributes"]["key"]
    mixed = await tenant.call("GET", f"/v1/environments?page[after]={cursor}")
    assert mixed.status_code == 200, mixed.text
    keys = [item["attributes"]["key"] for item in mixed.json()["data"]]
    assert keys == in_order[in_order.index(first_made) + 1 :]


async def test_environments_crud(tenant: Tenant) -> None:
    listed = await tenant.call("GET", "/v1/environments")
    assert len(listed.json()["data"]) == 3
    created = await tenant.create(
        "environments", {"key": "qa", "name": "QA", "color": "#123abc", "position": 5}
    )
    assert created["attributes"]["position"] == 5
    duplicate = await tenant.call(
        "POST", "/v1/environments", body=document("environments", {"key": "qa", "name": "Again"})
    )
    assert duplicate.status_code == 409
    bad = await tenant.call(
        "POST",
        "/v1/environments",
        body=document("environments", {"key": "Not A Slug", "name": "x", "color": "red"}),
    )
    assert bad.status_code == 422
    assert {error["source"]["pointer"] for error in bad.json()["errors"]} == {
        "/data/attributes/key",
        "/data/attributes/color",
    }
    updated = await tenant.call(
        "PATCH",
        f"/v1/environments/{created['id']}",
        body=document("environments", {"name": "Quality"}, created["id"]),
    )
    assert updated.json()["data"]["attributes"]["name"] == "Quality"
    assert (await tenant.call("DELETE", f"/v1/environments/{created['id']}")).status_code == 204
    assert (await tenant.call("GET", f"/v1/environments/{created['id']}")).status_code == 404


async def test_environment_with_overrides_cannot_be_deleted(tenant: Tenant) -> None:
    await tenant.create(
        "configs", {"key": "app", "name": "App", "environments": {"staging": {"debug": True}}}
    )
    response = await tenant.call("DELETE", f"/v1/environments/{tenant.environments['staging']}")
    assert response.status_code == 409


async def test_api_keys_create_list_get_revoke(tenant: Tenant) -> None:
    member_id, member_key = await tenant.user_with_key("MEMBER")
    assert (await tenant.call("GET", "/v1/configs", member_key)).status_code == 200
    keys = (await tenant.call("GET", "/v1/api-keys")).json()["data"]
    member_entry = next(
        item for item in keys if item["relationships"]["user"]["data"]["id"] == member_id
    )
    assert "secret" not in member_entry["attributes"]
    one = await tenant.call("GET", f"/v1/api-keys/{member_entry['id']}")
    assert one.status_code == 200
    assert member_key not in one.text
    assert (await tenant.call("DELETE", f"/v1/api-keys/{member_entry['id']}")).status_code == 204
    # Refused at once, by this and any other process: no cache in between.
    assert (await tenant.call("GET", "/v1/configs", member_key)).status_code == 401
    revoked = (await tenant.call("GET", f"/v1/api-keys/{member_entry['id']}")).json()["data"]
    assert RFC3339_UTC.match(revoked["attributes"]["revoked_at"])


async def test_key_last_used_is_recorded_without_a_write_per_request(
    tenant: Tenant, module_database: URL
) -> None:
    _, key = await tenant.user_with_key("VIEWER")
    connection = await connect(module_database)
    digest = hashlib.sha256(key.encode()).digest()
    assert (
        await connection.fetchval(
            "SELECT last_used_at FROM api_keys WHERE secret_hash = $1", digest
        )
        is None
    )
    await tenant.call("GET", "/v1/account", key)
    first = await connection.fetchval(
        "SELECT last_used_at FROM api_keys WHERE secret_hash = $1", digest
    )
    assert first is not None
    # Any UPDATE would leave a new row version: another xmin and ctid.
    version = "SELECT xmin::text || ctid::text FROM api_keys WHERE secret_hash = $1"
    before = await connection.fetchval(version, digest)
    for _ in range(5):
        await tenant.call("GET", "/v1/account", key)
    assert await connection.fetchval(version, digest) == before
    await connection.close()


async def test_openapi_and_docs_are_served(client: httpx.AsyncClient) -> None:
    schema = await client.get("/openapi.json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in (
        "/v1/accounts",
        "/v1/account",
        "/v1/users",
        "/v1/users/{user_id}",
        "/v1/environments",
        "/v1/api-keys",
        "/v1/configs",
        "/v1/configs/{config_id}/resolved",
        "/livez",
        "/readyz",
    ):
        assert path in paths
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()


@pytest.mark.parametrize(
    ("resource_type", "attribute"),
    [
        ("users", "role"),
        ("users", "email"),
        ("environments", "name"),
        ("environments", "position"),
        ("configs", "items"),
        ("configs", "name"),
    ],
)
async def test_patch_refuses_null_for_required_attributes(
    tenant: Tenant, resource_type: str, attribute: str
) -> None:
    targets = {
        "users": lambda: tenant.create("users", {"email": f"{uuid.uuid4().hex[:8]}@example.test"}),
        "environments": lambda: tenant.create(
            "environments", {"key": uuid.uuid4().hex[:8], "name": "E"}
        ),
        "configs": lambda: tenant.create("configs", {"key": uuid.uuid4().hex[:8], "name": "C"}),
    }
    target = await targets[resource_type]()
    path = f"/v1/{resource_type}/{target['id']}"
    refused = await tenant.call(
        "PATCH", path, body=document(resource_type, {attribute: None}, target["id"])
    )
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["source"]["pointer"] == f"/data/attributes/{attribute}"
    assert (await tenant.call("GET", path)).json()["data"] == target
