"""Configs: CRUD, parent chains, cycles, resolution, the JSONB containment filter."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import URL

from service.accounts.key_secrets import digest
from service.configs.store import page_statement
from tests.support.api import Tenant, document, new_tenant
from tests.support.postgres import connect


@pytest.fixture
async def tenant(module_client: httpx.AsyncClient) -> Tenant:
    """An account of its own in the module's shared app (tests/conftest.py)."""
    return await new_tenant(module_client)


async def test_the_body_id_names_the_url_resource_in_any_spelling(tenant: Tenant) -> None:
    """The URL takes an id in any spelling of a UUID; so does the body."""
    created = await tenant.create("configs", {"key": "spelled", "name": "Spelled"})
    upper = created["id"].upper()
    patched = await tenant.call(
        "PATCH", f"/v1/configs/{created['id']}", body=document("configs", {"name": "N"}, upper)
    )
    assert patched.status_code == 200, patched.text
    other = await tenant.call(
        "PATCH",
        f"/v1/configs/{created['id']}",
        body=document("configs", {"name": "N"}, "00000000-0000-0000-0000-000000000000"),
    )
    assert other.status_code == 409
    assert other.json()["errors"][0]["source"] == {"pointer": "/data/id"}


async def test_config_crud(tenant: Tenant) -> None:
    created = await tenant.create(
        "configs",
        {"key": "billing", "name": "Billing", "description": "money", "items": {"currency": "EUR"}},
    )
    assert created["attributes"]["items"] == {"currency": "EUR"}
    assert created["relationships"]["parent"]["data"] is None
    got = await tenant.call("GET", f"/v1/configs/{created['id']}")
    assert got.json()["data"]["attributes"]["description"] == "money"
    patched = await tenant.call(
        "PATCH",
        f"/v1/configs/{created['id']}",
        body=document("configs", {"items": {"currency": "USD"}}, created["id"]),
    )
    assert patched.json()["data"]["attributes"]["items"] == {"currency": "USD"}
    duplicate = await tenant.call(
        "POST", "/v1/configs", body=document("configs", {"key": "billing", "name": "Again"})
    )
    assert duplicate.status_code == 409
    assert (await tenant.call("DELETE", f"/v1/configs/{created['id']}")).status_code == 204
    assert (await tenant.call("GET", f"/v1/configs/{created['id']}")).status_code == 404


async def test_resolution_merges_the_parent_chain_and_the_environment(tenant: Tenant) -> None:
    root = await tenant.create(
        "configs",
        {
            "key": "base",
            "name": "Base",
            "items": {"timeout": 10, "retries": 3, "region": "eu"},
            "environments": {"production": {"timeout": 30, "replicas": 5}},
        },
    )
    middle = await tenant.create(
        "configs",
        {
            "key": "service",
            "name": "Service",
            "items": {"retries": 5},
            "environments": {"production": {"retries": 7}},
        },
        parent=root["id"],
    )
    leaf = await tenant.create(
        "configs",
        {"key": "worker", "name": "Worker", "items": {"timeout": 20}},
        parent=middle["id"],
    )

    production = await tenant.call(
        "GET", f"/v1/configs/{leaf['id']}/resolved", params={"environment": "production"}
    )
    assert production.status_code == 200
    body = production.json()
    # The leaf's own timeout wins over the root's production override; the
    # middle's production override wins over its own base value.
    assert body["data"]["attributes"]["items"] == {
        "timeout": 20,
        "retries": 7,
        "region": "eu",
        "replicas": 5,
    }
    assert body["meta"]["chain"] == [root["id"], middle["id"], leaf["id"]]
    staging = await tenant.call(
        "GET", f"/v1/configs/{leaf['id']}/resolved", params={"environment": "staging"}
    )
    assert staging.json()["data"]["attributes"]["items"] == {
        "timeout": 20,
        "retries": 5,
        "region": "eu",
    }

    unknown = await tenant.call(
        "GET", f"/v1/configs/{leaf['id']}/resolved", params={"environment": "moon"}
    )
    assert unknown.status_code == 404
    assert unknown.json()["errors"][0]["source"] == {"parameter": "environment"}
    assert unknown.json()["errors"][0]["detail"] == "no environment with key 'moon'"
    missing = await tenant.call("GET", f"/v1/configs/{leaf['id']}/resolved")
    assert missing.status_code == 400


async def test_cycles_are_refused_on_write(tenant: Tenant) -> None:
    a = await tenant.create("configs", {"key": "a", "name": "A"})
    b = await tenant.create("configs", {"key": "b", "name": "B"}, parent=a["id"])
    c = await tenant.create("configs", {"key": "c", "name": "C"}, parent=b["id"])
    for config, parent in ((a, c), (a, a), (b, c)):
        refused = await tenant.call(
            "PATCH",
            f"/v1/configs/{config['id']}",
            body=document("configs", {}, config["id"], parent=parent["id"]),
        )
        assert refused.status_code == 409, (
            config["attributes"]["key"],
            parent["attributes"]["key"],
        )
        assert "cycle" in refused.json()["errors"][0]["detail"]
    # Moving c to the root and a under c is fine: no cycle.
    assert (
        await tenant.call(
            "PATCH", f"/v1/configs/{c['id']}", body=document("configs", {}, c["id"], parent=None)
        )
    ).status_code == 200
    assert (
        await tenant.call(
            "PATCH", f"/v1/configs/{a['id']}", body=document("configs", {}, a["id"], parent=c["id"])
        )
    ).status_code == 200
    resolved = await tenant.call(
        "GET", f"/v1/configs/{b['id']}/resolved", params={"environment": "development"}
    )
    assert resolved.json()["meta"]["chain"] == [c["id"], a["id"], b["id"]]


async def test_parent_with_children_cannot_be_deleted(tenant: Tenant) -> None:
    parent = await tenant.create("configs", {"key": "p", "name": "P"})
    await tenant.create("configs", {"key": "child", "name": "Child"}, parent=parent["id"])
    assert (await tenant.call("DELETE", f"/v1/configs/{parent['id']}")).status_code == 409
    assert (await tenant.call("GET", f"/v1/configs/{parent['id']}")).status_code == 200


async def test_overrides_must_name_existing_environments(tenant: Tenant) -> None:
    refused = await tenant.call(
        "POST",
        "/v1/configs",
        body=document("configs", {"key": "k", "name": "K", "environments": {"moon": {"x": 1}}}),
    )
    assert refused.status_code == 404
    assert refused.json()["errors"][0]["source"]["pointer"] == "/data/attributes/environments/moon"
    not_object = await tenant.call(
        "POST",
        "/v1/configs",
        body=document("configs", {"key": "k", "name": "K", "environments": {"staging": 5}}),
    )
    assert not_object.status_code == 422


async def test_items_filter_uses_containment(tenant: Tenant) -> None:
    for number in range(6):
        await tenant.create(
            "configs",
            {
                "key": f"svc-{number}",
                "name": f"S{number}",
                "items": {
                    "tier": "gold" if number % 3 == 0 else "silver",
                    "n": number,
                    "tags": ["a", "b"],
                },
            },
        )
    gold = await tenant.call("GET", "/v1/configs", params={"filter[items]": '{"tier": "gold"}'})
    assert sorted(item["attributes"]["key"] for item in gold.json()["data"]) == ["svc-0", "svc-3"]
    nested = await tenant.call(
        "GET", "/v1/configs", params={"filter[items]": '{"tags": ["b"], "n": 4}'}
    )
    assert [item["attributes"]["key"] for item in nested.json()["data"]] == ["svc-4"]
    for bad in ("not json", "[1, 2]", '"gold"', '{"tier": '):
        refused = await tenant.call("GET", "/v1/configs", params={"filter[items]": bad})
        assert refused.status_code == 400, bad
        assert refused.json()["errors"][0]["source"] == {"parameter": "filter[items]"}


async def test_items_filter_is_answered_by_the_gin_index(
    tenant: Tenant, module_database: URL
) -> None:
    """The endpoint's own query (the page read with its caller's key check),
    explained on a table large enough for the planner to choose."""
    connection = await connect(module_database)
    await connection.execute(
        """
        INSERT INTO configs (account_id, key, name, items)
        SELECT $1::uuid, 'bulk-' || n, 'Bulk ' || n, jsonb_build_object('tier', 'tier-' || (n % 1000), 'n', n)
          FROM generate_series(1, 20000) AS n
        """,
        uuid.UUID(tenant.account_id),
    )
    await connection.execute("ANALYZE configs")
    statement = page_statement(by_key=False, by_items=True, after=False, descending=False)
    explained = await connection.fetch(
        f"EXPLAIN {statement.as_caller.sql}", digest(tenant.owner_key), '{"tier": "tier-7"}', 100
    )
    plan = "\n".join(row[0] for row in explained)
    await connection.close()
    assert "configs_items_idx" in plan, plan
    found = await tenant.call(
        "GET", "/v1/configs", params={"filter[items]": '{"tier": "tier-7"}', "page[size]": "100"}
    )
    assert len(found.json()["data"]) == 20


async def test_injection_attempts_in_filters_and_cursors_find_nothing_and_change_nothing(
    tenant: Tenant,
) -> None:
    await tenant.create("configs", {"key": "svc", "name": "Svc", "items": {"tier": "gold"}})
    before = (await tenant.call("GET", "/v1/configs")).json()["data"]
    for value in ("' OR 1=1 --", "svc'; DROP TABLE configs; --", '$.tier ? (@ == "gold")', "svc%"):
        found = await tenant.call("GET", "/v1/configs", params={"filter[key]": value})
        assert found.status_code == 200, value
        assert found.json()["data"] == [], value
    # Strings inside filter[items] are values to contain, never SQL or JSON path.
    for items in ('{"tier": "gold\' OR 1=1 --"}', '{"$.tier": "gold"}', '{"tier": {"$ne": null}}'):
        found = await tenant.call("GET", "/v1/configs", params={"filter[items]": items})
        assert found.status_code == 200, items
        assert found.json()["data"] == [], items
    deep = "[" * 3_000 + "]" * 3_000  # deeper than the JSON parser's recursion limit
    refused = await tenant.call("GET", "/v1/configs", params={"filter[items]": deep})
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["source"] == {"parameter": "filter[items]"}
    for payload in (
        ["2026-01-01T00:00:00+00:00'; DROP TABLE configs; --", str(uuid.uuid4())],
        ["2026-01-01T00:00:00+00:00", "' OR 1=1 --"],
        {"created_at": "2026-01-01T00:00:00+00:00"},
    ):
        cursor = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
        refused = await tenant.call("GET", "/v1/configs", params={"page[after]": cursor})
        assert refused.status_code == 400, payload
        assert refused.json()["errors"][0]["source"] == {"parameter": "page[after]"}
    assert (await tenant.call("GET", "/v1/configs")).json()["data"] == before


# --- bounds: chains, pages and resolved configs -------------------------------------


async def _chain(tenant: Tenant, prefix: str, levels: int) -> list[str]:
    ids: list[str] = []
    for level in range(levels):
        made = await tenant.create(
            "configs",
            {"key": f"{prefix}-{level}", "name": "C"},
            parent=ids[-1] if ids else None,
        )
        ids.append(made["id"])
    return ids


async def test_re_parenting_counts_the_subtree_that_moves(tenant: Tenant) -> None:
    """Two chains of 20: hanging one under the other would make 40 levels."""
    upper = await _chain(tenant, "upper", 20)
    lower = await _chain(tenant, "lower", 20)
    moved = await tenant.call(
        "PATCH",
        f"/v1/configs/{lower[0]}",
        body=document("configs", {}, lower[0], parent=upper[-1]),
    )
    assert moved.status_code == 422, moved.text
    assert "would make 40" in moved.json()["errors"][0]["detail"]
    fits = await tenant.call(
        "PATCH",
        f"/v1/configs/{lower[8]}",
        body=document("configs", {}, lower[8], parent=upper[19]),
    )
    assert fits.status_code == 200, fits.text  # 20 + 12 = 32 levels


async def test_a_chain_longer_than_the_limit_is_refused_not_cut(
    tenant: Tenant, module_database: URL
) -> None:
    """A chain of 40 stored before the limit: resolving it is a 409, never a
    resolution silently missing its top levels."""
    items = [{f"level{level}": level} for level in range(40)]
    parent = await _store_chain(module_database, tenant, "old", items)
    response = await tenant.call(
        "GET", f"/v1/configs/{parent}/resolved", params={"environment": "production"}
    )
    assert response.status_code == 409, response.text
    assert "longer than 32 levels" in response.json()["errors"][0]["detail"]


async def test_a_page_ends_early_once_it_holds_a_megabyte(tenant: Tenant) -> None:
    items = {f"k{n}": "v" * 290 for n in range(100)}  # about 31 KB each
    for number in range(40):
        await tenant.create("configs", {"key": f"big-{number}", "name": "B", "items": items})
    first = await tenant.call("GET", "/v1/configs", params={"page[size]": "100"})
    assert first.status_code == 200
    assert len(first.content) <= 1024 * 1024 + 2048
    page = first.json()
    assert 20 < len(page["data"]) < 40
    assert page["links"]["next"]
    rest = (await tenant.call("GET", page["links"]["next"])).json()
    keys = [item["attributes"]["key"] for item in page["data"] + rest["data"]]
    assert keys == [f"big-{number}" for number in range(40)]
    assert rest["links"]["next"] is None


async def test_a_resolution_larger_than_its_bound_is_refused(
    tenant: Tenant, module_database: URL
) -> None:
    """Configs of 0.9 MB each, stored before their size was limited."""
    items = [{f"l{level}-{n}": "x" * 900 for n in range(1000)} for level in range(3)]
    parent = await _store_chain(module_database, tenant, "huge", items)
    response = await tenant.call(
        "GET", f"/v1/configs/{parent}/resolved", params={"environment": "production"}
    )
    assert response.status_code == 409, response.text
    assert "bytes, over" in response.json()["errors"][0]["detail"]


async def _store_chain(
    url: URL, tenant: Tenant, prefix: str, items: list[dict[str, Any]]
) -> uuid.UUID:
    """A chain of configs written straight into the database, as data stored
    before the API's limits; returns the last (deepest) one's id."""
    connection = await connect(url)
    parent: uuid.UUID | None = None
    for level, level_items in enumerate(items):
        parent = await connection.fetchval(
            "INSERT INTO configs (account_id, key, name, parent_id, items) "
            "VALUES ($1, $2, 'C', $3, $4::jsonb) RETURNING id",
            uuid.UUID(tenant.account_id),
            f"{prefix}-{level}",
            parent,
            json.dumps(level_items),
        )
    await connection.close()
    assert parent is not None
    return parent


async def test_overrides_of_declared_items_have_their_type(tenant: Tenant) -> None:
    parent = await tenant.create("configs", {"key": "typed", "name": "T", "items": {"n": 1}})
    child = await tenant.create("configs", {"key": "typed-child", "name": "C"}, parent=parent["id"])

    async def override(config_id: str, values: dict[str, Any]) -> Any:
        body = document("configs", {"environments": {"production": values}}, config_id)
        return await tenant.call("PATCH", f"/v1/configs/{config_id}", body=body)

    wrong = await override(child["id"], {"n": "seven"})
    assert wrong.status_code == 422
    assert wrong.json()["errors"][0]["source"] == {
        "pointer": "/data/attributes/environments/production/n"
    }
    assert wrong.json()["errors"][0]["detail"] == "item 'n' is a NUMBER; the override is a STRING"
    assert (await override(child["id"], {"n": 7})).status_code == 200
    # Items declared nowhere may still be overridden in /v1, as before.
    assert (await override(child["id"], {"n": 7, "free": "x"})).status_code == 200
    own = await tenant.call(
        "POST",
        "/v1/configs",
        body=document(
            "configs",
            {
                "key": "own",
                "name": "O",
                "items": {"m": True},
                "environments": {"staging": {"m": 3}},
            },
        ),
    )
    assert own.status_code == 422
    assert own.json()["errors"][0]["source"] == {
        "pointer": "/data/attributes/environments/staging/m"
    }
    # The parent cannot drop or retype the item the child overrides.
    dropped = await tenant.call(
        "PATCH",
        f"/v1/configs/{parent['id']}",
        body=document("configs", {"items": {}}, parent["id"]),
    )
    assert dropped.status_code == 409
    assert "config 'typed-child' overrides item 'n'" in dropped.json()["errors"][0]["detail"]
