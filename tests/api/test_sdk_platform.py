"""Environments, the account, its settings and contexts in the smplkit SDK's
dialect (/api/v1); the SDK itself drives them in tests/api/test_sdk_contract.py."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy.engine import URL

from tests.support.api import Tenant, document, new_tenant
from tests.support.postgres import connect


@pytest.fixture
async def tenant(module_client: httpx.AsyncClient) -> Tenant:
    """An account of its own in the module's shared app (tests/conftest.py)."""
    return await new_tenant(module_client)


def environment(key: str, **attributes: Any) -> dict[str, Any]:
    """A body as the SDK builds it (`_env_to_resource`)."""
    values = {"name": key.upper(), "color": None, "classification": "STANDARD", "managed": False}
    return {"data": {"type": "environment", "id": key, "attributes": {**values, **attributes}}}


async def test_environments_by_key_with_classification_and_colours(tenant: Tenant) -> None:
    created = await tenant.call(
        "POST",
        "/api/v1/environments",
        body=environment("qa", color="#ABC", classification="ad_hoc"),
    )
    assert created.status_code == 201, created.text
    attributes = created.json()["data"]["attributes"]
    assert (attributes["color"], attributes["classification"]) == ("#abc", "AD_HOC")
    replaced = await tenant.call(
        "PUT", "/api/v1/environments/qa", body=environment("qa", color="#11223344")
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["data"]["attributes"]["color"] == "#11223344"
    listed = await tenant.call("GET", "/api/v1/environments?sort=name&page[number]=1")
    assert [row["id"] for row in listed.json()["data"]] == [
        "development",
        "production",
        "qa",
        "staging",
    ]
    for bad in ("#12", "red", "#1234567", "#ggg"):
        refused = await tenant.call(
            "PUT", "/api/v1/environments/qa", body=environment("qa", color=bad)
        )
        assert refused.status_code == 422, bad
    duplicate = await tenant.call("POST", "/api/v1/environments", body=environment("qa"))
    assert duplicate.status_code == 409
    for loose in ("yes", 1, "true"):
        body = environment("qa")
        body["data"]["attributes"]["managed"] = loose
        refused = await tenant.call("PUT", "/api/v1/environments/qa", body=body)
        assert refused.status_code == 422, loose
    # What one dialect stored, the other takes back as it reads it.
    in_v1 = await tenant.call("GET", "/v1/environments")
    (row,) = [row for row in in_v1.json()["data"] if row["attributes"]["key"] == "qa"]
    assert row["attributes"]["color"] == "#11223344"
    sent_back = await tenant.call(
        "PATCH",
        f"/v1/environments/{row['id']}",
        body=document("environments", {"color": row["attributes"]["color"]}, row["id"]),
    )
    assert sent_back.status_code == 200, sent_back.text


async def test_deleting_an_overridden_environment_needs_cascade(tenant: Tenant) -> None:
    assert (
        await tenant.call("POST", "/api/v1/environments", body=environment("qa"))
    ).status_code == 201
    config = {
        "data": {
            "type": "config",
            "id": "app",
            "attributes": {
                "name": "App",
                "items": {"a": {"value": 1, "type": "NUMBER", "description": None}},
                "environments": {"qa": {"a": 2}},
            },
        }
    }
    assert (await tenant.call("POST", "/api/v1/configs", body=config)).status_code == 201
    kept = await tenant.call("DELETE", "/api/v1/environments/qa?cascade=false")
    assert kept.status_code == 409
    gone = await tenant.call("DELETE", "/api/v1/environments/qa?cascade=true")
    assert gone.status_code == 204
    app = await tenant.call("GET", "/api/v1/configs/app")
    assert app.json()["data"]["attributes"]["environments"] == {}
    assert (await tenant.call("GET", "/api/v1/environments/qa")).status_code == 404


async def test_settings_are_a_plain_object_replaced_whole(tenant: Tenant) -> None:
    empty = await tenant.call("GET", "/api/v1/accounts/current/settings")
    assert (empty.status_code, empty.json()) == (200, {})
    settings = {"environment_order": ["production", "staging"], "extra": {"x": 1}}
    saved = await tenant.client.put(
        "/api/v1/accounts/current/settings",
        headers={"Authorization": f"Bearer {tenant.owner_key}", "Content-Type": "application/json"},
        json=settings,
    )
    assert (saved.status_code, saved.json()) == (200, settings)
    assert (await tenant.call("GET", "/api/v1/accounts/current/settings")).json() == settings
    for bad in (
        [1],
        {"environment_order": "production"},
        {"environment_order": [1]},
        {"environment_order": ["production", "production"]},
    ):
        refused = await tenant.call("PUT", "/api/v1/accounts/current/settings", body=bad)
        assert refused.status_code == 422, bad
    assert (await tenant.call("GET", "/api/v1/accounts/current/settings")).json() == settings
    current = await tenant.call("GET", "/api/v1/accounts/current")
    assert current.json()["data"]["id"] == tenant.account_id


async def test_reported_contexts_are_recorded(tenant: Tenant, module_database: URL) -> None:
    report = {
        "contexts": [
            {"type": "environment", "key": "production"},
            {"type": "service", "key": "billing", "attributes": {"name": "billing"}},
        ]
    }
    for _ in range(2):
        answer = await tenant.call("POST", "/api/v1/contexts/bulk", body=report)
        assert answer.json() == {"registered": 2}, answer.text
    connection = await connect(module_database)
    try:
        rows = await connection.fetch(
            "SELECT type, key, attributes FROM contexts WHERE account_id = $1 ORDER BY type",
            tenant.account_id,
        )
    finally:
        await connection.close()
    assert [(row["type"], row["key"]) for row in rows] == [
        ("environment", "production"),
        ("service", "billing"),
    ]
