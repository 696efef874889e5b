"""Configs in the smplkit SDK's dialect (/api/v1): shapes the SDK's generated
models parse, typed items enforced, pages numbered from 1, PUT replaces,
discovery creates only what is missing. The SDK itself drives the real
server in tests/api/test_sdk_contract.py."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from smplkit._generated.config.models.config_list_response import ConfigListResponse
from smplkit._generated.config.models.config_response import ConfigResponse
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine

from service.configs.store import check_environments
from tests.support.api import Tenant, new_tenant
from tests.support.postgres import connect, service_url

SDK_QUERY = "sort=key&page%5Bnumber%5D={page}&page%5Bsize%5D={size}&meta%5Btotal%5D=false"


@pytest.fixture
async def tenant(module_client: httpx.AsyncClient) -> Tenant:
    """An account of its own in the module's shared app (tests/conftest.py)."""
    return await new_tenant(module_client)


def sdk_body(key: str, **attributes: Any) -> dict[str, Any]:
    """A body as the SDK builds it (`smplkit/config/helpers.py`)."""
    return {
        "data": {
            "type": "config",
            "id": key,
            "attributes": {
                "name": attributes.pop("name", key.title()),
                "description": None,
                "parent": None,
                "items": {},
                "environments": {},
                **attributes,
            },
        }
    }


def item(value: Any, item_type: str, description: str | None = None) -> dict[str, Any]:
    return {"value": value, "type": item_type, "description": description}


async def test_create_get_replace_delete_in_the_sdk_shape(tenant: Tenant) -> None:
    body = sdk_body(
        "common",
        items={
            "db": item({"host": "a", "pool": {"min": 1}}, "JSON"),
            "region": item("eu", "STRING", "where"),
        },
        environments={"production": {"region": "us"}},
    )
    created = await tenant.call("POST", "/api/v1/configs", body=body)
    assert created.status_code == 201, created.text
    parsed = ConfigResponse.from_dict(created.json())
    assert parsed.data.id == "common"
    assert parsed.data.attributes.created_at is not None
    attributes = created.json()["data"]["attributes"]
    assert attributes["items"]["region"] == item("eu", "STRING", "where")
    assert attributes["managed"] is True
    assert attributes["parent"] is None

    child = sdk_body("child", parent="common", items={"timeout": item(3, "NUMBER")})
    assert (await tenant.call("POST", "/api/v1/configs", body=child)).status_code == 201
    got = await tenant.call("GET", "/api/v1/configs/child")
    assert got.json()["data"]["attributes"]["parent"] == "common"

    # PUT replaces: the override absent from the body is gone; managed, absent, stays.
    replaced = await tenant.call(
        "PUT",
        "/api/v1/configs/common",
        body=sdk_body("common", items={"region": item("ap", "STRING")}),
    )
    assert replaced.status_code == 200, replaced.text
    attributes = replaced.json()["data"]["attributes"]
    assert attributes["items"] == {"region": item("ap", "STRING")}
    assert attributes["environments"] == {}
    assert attributes["managed"] is True

    # The same row through /v1, which keeps its raw shapes.
    listed = await tenant.call("GET", "/v1/configs", params={"filter[key]": "common"})
    assert listed.json()["data"][0]["attributes"]["items"] == {"region": "ap"}

    parent_in_use = await tenant.call("DELETE", "/api/v1/configs/common")
    assert parent_in_use.status_code == 409
    assert (await tenant.call("DELETE", "/api/v1/configs/child")).status_code == 204
    assert (await tenant.call("DELETE", "/api/v1/configs/common")).status_code == 204
    assert (await tenant.call("GET", "/api/v1/configs/common")).status_code == 404


async def test_errors_are_the_envelope_with_the_statuses_the_sdk_maps(tenant: Tenant) -> None:
    body = sdk_body("dup")
    assert (await tenant.call("POST", "/api/v1/configs", body=body)).status_code == 201
    duplicate = await tenant.call("POST", "/api/v1/configs", body=body)
    assert duplicate.status_code == 409
    assert duplicate.json()["errors"][0]["source"] == {"pointer": "/data/id"}
    missing = await tenant.call("PUT", "/api/v1/configs/nope", body=sdk_body("nope"))
    assert missing.status_code == 404
    assert missing.json()["errors"][0]["status"] == "404"
    unknown_path = await tenant.call("GET", "/api/v1/nothing-here")
    assert unknown_path.status_code == 404
    assert unknown_path.json()["errors"][0]["title"] == "Not Found"
    anonymous = await tenant.client.get("/api/v1/configs")
    assert anonymous.status_code == 401
    assert anonymous.json()["errors"][0]["status"] == "401"


async def test_bulk_is_the_discovery_endpoint_and_no_config_key(tenant: Tenant) -> None:
    # /configs/bulk is one resource for every method, as the OpenAPI document
    # says (a concrete path before a templated one): POST only.
    for method in ("GET", "PUT", "DELETE", "OPTIONS"):
        answer = await tenant.call(method, "/api/v1/configs/bulk")
        assert answer.status_code == 405, (method, answer.text)
        assert answer.headers["Allow"] == "POST"
    refused = await tenant.call("POST", "/api/v1/configs", body=sdk_body("bulk"))
    assert refused.status_code == 422
    error = refused.json()["errors"][0]
    assert error["source"] == {"pointer": "/data/id"}
    assert "'bulk' is reserved" in error["detail"]
    in_v1 = await tenant.call(
        "POST",
        "/v1/configs",
        body={"data": {"type": "configs", "attributes": {"key": "bulk", "name": "B"}}},
    )
    assert in_v1.status_code == 422
    assert in_v1.json()["errors"][0]["source"] == {"pointer": "/data/attributes/key"}
    discovered = await tenant.call(
        "POST", "/api/v1/configs/bulk", body={"configs": [{"id": "bulk"}]}
    )
    assert discovered.status_code == 200
    (skipped,) = discovered.json()["skipped"]
    assert skipped["index"] == 0
    assert skipped["detail"].startswith("id: 'bulk' is reserved")
    listed = await tenant.call("GET", "/api/v1/configs")
    assert listed.json()["data"] == []
    # "bulky" and "bulk.v2" are ordinary keys.
    for key in ("bulky", "bulk.v2"):
        created = await tenant.call("POST", "/api/v1/configs", body=sdk_body(key))
        assert created.status_code == 201, created.text
        assert (await tenant.call("GET", f"/api/v1/configs/{key}")).status_code == 200


@pytest.mark.parametrize(
    ("items", "status", "pointer"),
    [
        ({"n": item("5", "NUMBER")}, 422, "/data/attributes/items/n/value"),
        ({"b": item(1, "BOOLEAN")}, 422, "/data/attributes/items/b/value"),
        ({"s": item(True, "STRING")}, 422, "/data/attributes/items/s/value"),
        ({"x": item(1, "INTEGER")}, 422, "/data/attributes/items/x/type"),
    ],
)
async def test_a_value_must_match_its_type(
    tenant: Tenant, items: dict[str, Any], status: int, pointer: str
) -> None:
    response = await tenant.call("POST", "/api/v1/configs", body=sdk_body("typed", items=items))
    assert response.status_code == status, response.text
    assert response.json()["errors"][0]["source"]["pointer"] == pointer
    assert (await tenant.call("GET", "/api/v1/configs/typed")).status_code == 404


async def test_null_matches_every_type_and_json_takes_anything(tenant: Tenant) -> None:
    items = {
        "unset": item(None, "NUMBER"),
        "list": item([1, "a"], "JSON"),
        "text": item("7", "JSON"),
    }
    response = await tenant.call("POST", "/api/v1/configs", body=sdk_body("loose", items=items))
    assert response.status_code == 201, response.text
    assert response.json()["data"]["attributes"]["items"] == items


async def test_a_type_never_changes_and_agrees_along_the_chain(tenant: Tenant) -> None:
    root = sdk_body("root", items={"limit": item(5, "NUMBER")})
    assert (await tenant.call("POST", "/api/v1/configs", body=root)).status_code == 201
    changed = await tenant.call(
        "PUT", "/api/v1/configs/root", body=sdk_body("root", items={"limit": item("5", "STRING")})
    )
    assert changed.status_code == 409
    assert changed.json()["errors"][0]["source"]["pointer"] == "/data/attributes/items/limit/type"
    child = sdk_body("leaf", parent="root", items={"limit": item("high", "STRING")})
    disagreeing = await tenant.call("POST", "/api/v1/configs", body=child)
    assert disagreeing.status_code == 409
    # The same rule through /v1, which infers types from raw values.
    stored = await tenant.call("GET", "/v1/configs", params={"filter[key]": "root"})
    root_id = stored.json()["data"][0]["id"]
    v1_change = await tenant.call(
        "PATCH",
        f"/v1/configs/{root_id}",
        body={"data": {"type": "configs", "id": root_id, "attributes": {"items": {"limit": "x"}}}},
    )
    assert v1_change.status_code == 409
    same_type = await tenant.call(
        "PATCH",
        f"/v1/configs/{root_id}",
        body={"data": {"type": "configs", "id": root_id, "attributes": {"items": {"limit": 9}}}},
    )
    assert same_type.status_code == 200
    typed = await tenant.call("GET", "/api/v1/configs/root")
    assert typed.json()["data"]["attributes"]["items"]["limit"] == item(9, "NUMBER")


async def test_overrides_name_declared_items_with_values_of_their_type(tenant: Tenant) -> None:
    root = sdk_body("base", items={"region": item("eu", "STRING")})
    assert (await tenant.call("POST", "/api/v1/configs", body=root)).status_code == 201
    inherited = sdk_body("svc", parent="base", environments={"production": {"region": "us"}})
    assert (await tenant.call("POST", "/api/v1/configs", body=inherited)).status_code == 201
    wrong_type = sdk_body("svc2", parent="base", environments={"production": {"region": 3}})
    response = await tenant.call("POST", "/api/v1/configs", body=wrong_type)
    assert response.status_code == 422
    assert response.json()["errors"][0]["source"]["pointer"] == (
        "/data/attributes/environments/production/region"
    )
    undeclared = sdk_body("svc3", environments={"production": {"nowhere": 1}})
    assert (await tenant.call("POST", "/api/v1/configs", body=undeclared)).status_code == 422
    no_environment = sdk_body(
        "svc4", items={"a": item(1, "NUMBER")}, environments={"moon": {"a": 2}}
    )
    assert (await tenant.call("POST", "/api/v1/configs", body=no_environment)).status_code == 404


async def test_parents_are_keys_that_exist_without_cycles(tenant: Tenant) -> None:
    orphan = await tenant.call("POST", "/api/v1/configs", body=sdk_body("o", parent="ghost"))
    assert orphan.status_code == 404
    assert orphan.json()["errors"][0]["source"] == {"pointer": "/data/attributes/parent"}
    for key, parent in (("a", None), ("b", "a")):
        body = sdk_body(key, parent=parent)
        assert (await tenant.call("POST", "/api/v1/configs", body=body)).status_code == 201
    cycle = await tenant.call("PUT", "/api/v1/configs/a", body=sdk_body("a", parent="b"))
    assert cycle.status_code == 409
    itself = await tenant.call("PUT", "/api/v1/configs/a", body=sdk_body("a", parent="a"))
    assert itself.status_code == 409


async def test_pages_are_numbered_from_one_in_a_total_order(tenant: Tenant) -> None:
    for number in range(5):
        body = sdk_body(f"k{number}", name=f"Name {4 - number}")
        assert (await tenant.call("POST", "/api/v1/configs", body=body)).status_code == 201
    pages = []
    for page in (1, 2, 3):
        response = await tenant.call(
            "GET", "/api/v1/configs?" + SDK_QUERY.format(page=page, size=2)
        )
        assert response.status_code == 200, response.text
        parsed = ConfigListResponse.from_dict(response.json())
        assert (parsed.meta.pagination.page, parsed.meta.pagination.size) == (page, 2)
        pages.append([row["id"] for row in response.json()["data"]])
    assert pages == [["k0", "k1"], ["k2", "k3"], ["k4"]]
    by_name = await tenant.call(
        "GET", "/api/v1/configs", params={"sort": "-name", "meta[total]": "true"}
    )
    assert [row["id"] for row in by_name.json()["data"]] == ["k0", "k1", "k2", "k3", "k4"]
    assert by_name.json()["meta"]["pagination"] == {
        "page": 1,
        "size": 1000,
        "total": 5,
        "total_pages": 1,
    }
    search = await tenant.call("GET", "/api/v1/configs", params={"filter[search]": "NAME 3"})
    assert [row["id"] for row in search.json()["data"]] == ["k1"]
    for bad in ({"page[size]": "1001"}, {"page[number]": "0"}, {"sort": "size"}):
        refused = await tenant.call("GET", "/api/v1/configs", params=bad)
        assert refused.status_code == 400, bad


async def test_discovery_creates_missing_configs_unmanaged_and_leaves_others(
    tenant: Tenant,
) -> None:
    existing = sdk_body("kept", items={"limit": item(1, "NUMBER")})
    assert (await tenant.call("POST", "/api/v1/configs", body=existing)).status_code == 201
    batch = {
        "configs": [
            {"id": "disc-child", "parent": "disc-parent", "service": "svc", "environment": "qa"},
            {"id": "kept", "items": {"limit": {"value": "x", "type": "STRING"}}},
            {
                "id": "disc-parent",
                "items": {
                    "limit": {"value": 10, "type": "NUMBER", "description": "a limit"},
                    "tags": {"value": ["a"], "type": "STRING"},
                    "unset": {"value": None, "type": "STRING"},
                },
            },
        ]
    }
    response = await tenant.call("POST", "/api/v1/configs/bulk", body=batch)
    assert response.status_code == 200, response.text
    assert response.json() == {"registered": 2, "skipped": []}
    kept = (await tenant.call("GET", "/api/v1/configs/kept")).json()["data"]["attributes"]
    assert kept["items"] == {"limit": item(1, "NUMBER")}
    parent = (await tenant.call("GET", "/api/v1/configs/disc-parent")).json()["data"]
    assert parent["attributes"]["managed"] is False
    assert parent["attributes"]["name"] == "Disc Parent"
    assert parent["attributes"]["items"] == {
        "limit": item(10, "NUMBER", "a limit"),
        "tags": item(["a"], "JSON"),
        "unset": item(None, "STRING"),
    }
    child = (await tenant.call("GET", "/api/v1/configs/disc-child")).json()["data"]
    assert child["attributes"]["parent"] == "disc-parent"
    again = await tenant.call("POST", "/api/v1/configs/bulk", body=batch)
    assert again.json() == {"registered": 0, "skipped": []}
    unmanaged = await tenant.call("GET", "/api/v1/configs", params={"filter[managed]": "false"})
    assert sorted(row["id"] for row in unmanaged.json()["data"]) == ["disc-child", "disc-parent"]


async def test_an_ancestor_cannot_strand_the_overrides_below_it(tenant: Tenant) -> None:
    async def put(key: str, **attributes: Any) -> int:
        return (
            await tenant.call("PUT", f"/api/v1/configs/{key}", body=sdk_body(key, **attributes))
        ).status_code

    color = {"color": item("red", "STRING")}
    for body in (
        sdk_body("g-root", items=color),
        sdk_body("g-mid", parent="g-root"),
        sdk_body("g-leaf", parent="g-mid", environments={"production": {"color": "blue"}}),
        sdk_body("g-other", items={"color": item(1, "NUMBER")}),
    ):
        assert (await tenant.call("POST", "/api/v1/configs", body=body)).status_code == 201
    leaf_before = (await tenant.call("GET", "/api/v1/configs/g-leaf")).json()

    # Removing the item the leaf overrides, moving the middle away from it, or
    # under a root where it is a NUMBER: each would leave the leaf's override wrong.
    removed = await tenant.call("PUT", "/api/v1/configs/g-root", body=sdk_body("g-root"))
    assert removed.status_code == 409
    assert (
        "config 'g-leaf' overrides item 'color' in 'production'"
        in removed.json()["errors"][0]["detail"]
    )
    assert await put("g-mid") == 409
    assert await put("g-mid", parent="g-other") == 409
    # So an item's type cannot change by removing and declaring it again.
    assert await put("g-root", items={"color": item(2, "NUMBER")}) == 409

    # Nothing changed: the leaf still saves as it reads (the SDK's save()).
    leaf = (await tenant.call("GET", "/api/v1/configs/g-leaf")).json()
    assert leaf == leaf_before
    saved = await tenant.call(
        "PUT", "/api/v1/configs/g-leaf", body={"data": {**leaf["data"], "attributes": {
            k: v for k, v in leaf["data"]["attributes"].items() if k not in ("created_at", "updated_at")
        }}},
    )  # fmt: skip
    assert saved.status_code == 200, saved.text
    # Once the override is gone, the item may go.
    assert await put("g-leaf", parent="g-mid") == 200
    assert await put("g-root") == 200


async def test_an_environment_a_write_overrides_cannot_be_deleted_before_it_commits(
    tenant: Tenant, module_database: URL
) -> None:
    """A config write checks that its overrides' environments exist, and an
    environment delete (which locks the environment FOR UPDATE, then counts its
    overrides) checks that nothing overrides it: the write's check holds the
    environment (FOR KEY SHARE) until it commits, so the delete waits for it
    and then sees the override (409), instead of slipping in between."""
    engine = create_async_engine(service_url(module_database))
    holder = await connect(module_database)
    try:
        async with engine.connect() as write:
            transaction = await write.begin()
            await check_environments(write, uuid.UUID(tenant.account_id), {"production": {}})
            with pytest.raises(asyncpg.LockNotAvailableError):
                await holder.execute(
                    "SELECT 1 FROM environments WHERE account_id = $1 AND key = 'production'"
                    " FOR UPDATE NOWAIT",
                    uuid.UUID(tenant.account_id),
                )
            await transaction.rollback()
        # Once the write has ended, nothing holds it.
        await holder.execute(
            "SELECT 1 FROM environments WHERE account_id = $1 AND key = 'production'"
            " FOR UPDATE NOWAIT",
            uuid.UUID(tenant.account_id),
        )
    finally:
        await holder.close()
        await engine.dispose()


async def test_discovery_leaves_out_invalid_entries_not_the_batch(tenant: Tenant) -> None:
    """The SDK sends what an application declared, 50 at a time: one entry that
    is no valid config (a key with a space, an oversized description or items)
    is answered in `skipped`; the rest are registered."""
    batch = {
        "configs": [
            {"id": "fine-a"},
            {"id": "bad key"},
            {"id": "fine-b", "items": {"x": {"value": 1, "type": "NUMBER"}}},
            {"id": "wordy", "items": {
                f"i{n}": {"value": None, "type": "STRING", "description": "d" * 1000}
                for n in range(40)
            }},
            {"id": "fat", "items": {"blob": {"value": "x" * 40_000, "type": "STRING"}}},
            {"id": "fine-c", "items": {"x": {"value": "one", "type": "INTEGER"}}},
        ]
    }  # fmt: skip
    response = await tenant.call("POST", "/api/v1/configs/bulk", body=batch)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["registered"] == 2
    assert [entry["index"] for entry in answer["skipped"]] == [1, 3, 4, 5]
    details = [entry["detail"] for entry in answer["skipped"]]
    assert details[0].startswith("id: String should match pattern")
    assert "the items' descriptions are" in details[1]
    assert "the items' values is" in details[2]
    assert details[3].startswith("items/x/type: Input should be")
    listed = (await tenant.call("GET", "/api/v1/configs")).json()["data"]
    assert [config["id"] for config in listed] == ["fine-a", "fine-b"]
    # The whole body is still one document: over 1,000 entries, or not a list, is refused.
    too_many = await tenant.call(
        "POST", "/api/v1/configs/bulk", body={"configs": [{"id": f"k{n}"} for n in range(1001)]}
    )
    assert too_many.status_code == 422
    assert (
        await tenant.call("POST", "/api/v1/configs/bulk", body={"configs": {}})
    ).status_code == 422


async def test_item_descriptions_are_bounded_too(tenant: Tenant) -> None:
    items = {f"i{n}": item(None, "STRING", "d" * 1000) for n in range(40)}
    refused = await tenant.call("POST", "/api/v1/configs", body=sdk_body("wordy", items=items))
    assert refused.status_code == 422
    error = refused.json()["errors"][0]
    assert error["source"] == {"pointer": "/data/attributes/items"}
    assert error["detail"].startswith("the items' descriptions are")


async def test_keys_and_names_sort_in_byte_order_whatever_the_collation(tenant: Tenant) -> None:
    keys = ["b", "B", "a-1", "a_1", "A", "a.2"]
    for key in keys:
        body = sdk_body(key, name=key.upper() + key)
        assert (await tenant.call("POST", "/api/v1/configs", body=body)).status_code == 201
    for sort, expected in (("key", sorted(keys)), ("-key", sorted(keys, reverse=True))):
        listed = await tenant.call("GET", "/api/v1/configs", params={"sort": sort})
        assert [row["id"] for row in listed.json()["data"]] == expected
    by_name = await tenant.call("GET", "/api/v1/configs", params={"sort": "name"})
    names = [row["attributes"]["name"] for row in by_name.json()["data"]]
    assert names == sorted(names)


async def test_a_discovery_with_many_bad_entries_logs_one_line(tenant: Tenant) -> None:
    """An SDK's discovery may carry any number of entries the service leaves
    out: one log line for the request, not one for each."""
    bad = [{"id": f"bad id {n}\n"} for n in range(300)]
    lines: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lines.append  # type: ignore[method-assign,assignment]
    logger = logging.getLogger("service.api.sdk.discovery")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        answer = await tenant.call("POST", "/api/v1/configs/bulk", body={"configs": bad})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["skipped"]) == 300
    assert len(lines) == 1
    assert lines[0].getMessage().startswith("discovery left out 300 entries")
