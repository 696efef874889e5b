"""One resolution rule: the server resolves a chain as the smplkit SDK does
(`smplkit._resolver.resolve`, the pinned SDK's own function), deep merging
objects, in both dialects."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from smplkit._resolver import resolve as sdk_resolve

from service.configs.resolution import resolve
from tests.support.api import Tenant, new_tenant

# Few keys, so that levels collide on them; values nest objects, as JSON items do.
KEYS = st.sampled_from(["db", "pool", "region", "tags", "max"])
SCALARS = st.none() | st.booleans() | st.integers(-5, 5) | st.sampled_from(["eu", "us", ""])
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)
LEVEL = st.fixed_dictionaries(
    {
        "items": st.dictionaries(KEYS, VALUES, max_size=4),
        "environments": st.dictionaries(
            st.sampled_from(["production", "staging"]),
            st.dictionaries(KEYS, VALUES, max_size=4),
            max_size=2,
        ),
    }
)


def typed(level: dict[str, Any]) -> dict[str, Any]:
    """A level as the SDK holds it: typed items, raw overrides."""
    return {
        "items": {key: {"value": value, "type": "JSON"} for key, value in level["items"].items()},
        "environments": level["environments"],
    }


def sdk_resolution(chain_from_root: list[dict[str, Any]], environment: str) -> dict[str, Any]:
    return sdk_resolve([typed(level) for level in reversed(chain_from_root)], environment)


@given(st.lists(LEVEL, min_size=1, max_size=5), st.sampled_from(["production", "staging", "qa"]))
def test_the_server_resolves_every_chain_as_the_sdk_does(
    chain: list[dict[str, Any]], environment: str
) -> None:
    assert resolve(chain, environment) == sdk_resolution(chain, environment)


def test_objects_merge_at_every_depth_and_lists_are_replaced() -> None:
    root = {
        "items": {
            "db": {"host": "a", "pool": {"min": 1, "max": 5}, "tags": [1, 2]},
            "region": "eu",
        },
        "environments": {"production": {"db": {"pool": {"min": 2}}, "region": "us"}},
    }
    child = {
        "items": {"db": {"pool": {"max": 10}, "tags": [3]}, "region": "ap"},
        "environments": {},
    }
    expected = {"db": {"host": "a", "pool": {"min": 2, "max": 10}, "tags": [3]}, "region": "ap"}
    assert resolve([root, child], "production") == expected
    assert sdk_resolution([root, child], "production") == expected


def test_null_and_scalars_replace_objects_whole() -> None:
    root = {"items": {"db": {"host": "a"}, "flat": "x"}, "environments": {}}
    child = {"items": {"db": None, "flat": {"now": "object"}}, "environments": {}}
    assert resolve([root, child], "production") == {"db": None, "flat": {"now": "object"}}


@pytest.fixture
async def tenant(module_client: httpx.AsyncClient) -> Tenant:
    """An account of its own in the module's shared app (tests/conftest.py)."""
    return await new_tenant(module_client)


async def test_both_dialects_resolve_a_stored_chain_as_the_sdk_does(tenant: Tenant) -> None:
    """/v1's resolved config equals the SDK's resolution of the chain as
    /api/v1 serves it to the SDK."""
    root = await tenant.create(
        "configs",
        {
            "key": "root",
            "name": "Root",
            "items": {"db": {"host": "a", "pool": {"min": 1, "max": 5}}, "region": "eu"},
            "environments": {"production": {"db": {"pool": {"min": 2}}, "region": "us"}},
        },
    )
    child = await tenant.create(
        "configs",
        {"key": "child", "name": "Child", "items": {"db": {"pool": {"max": 10}}, "timeout": 3}},
        parent=root["id"],
    )
    served = []
    for key in ("child", "root"):
        response = await tenant.call("GET", f"/api/v1/configs/{key}")
        assert response.status_code == 200, response.text
        served.append(response.json()["data"]["attributes"])
    for environment in ("production", "staging"):
        resolved = await tenant.call(
            "GET", f"/v1/configs/{child['id']}/resolved", params={"environment": environment}
        )
        assert resolved.status_code == 200, resolved.text
        assert resolved.json()["data"]["attributes"]["items"] == sdk_resolve(served, environment)
    production = sdk_resolve(served, "production")
    assert production["db"] == {"host": "a", "pool": {"min": 2, "max": 10}}
