"""filter[search] finds a stored name searched for as it is, whatever its
letters: the search and the name are lower-cased by the same rules
(PostgreSQL's), where Python's and PostgreSQL's lower() disagree ("İ", and a
final sigma, which Python lowers by its place in the word)."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest

from tests.support.api import Tenant, new_tenant

# key: the name stored, searched for exactly as stored.
NAMES = {"istanbul": "İstanbul", "sigma": "ΣΑΣ", "plain": "Plain"}


def _bodies(resource_type: str) -> list[dict[str, object]]:
    attributes: dict[str, object] = {}
    if resource_type == "flag":
        attributes = {"type": "BOOLEAN", "default": False, "values": None}
    return [
        {"data": {"type": resource_type, "id": key, "attributes": {**attributes, "name": name}}}
        for key, name in NAMES.items()
    ]


@pytest.mark.parametrize(
    ("path", "resource_type"),
    [
        ("/api/v1/configs", "config"),
        ("/api/v1/flags", "flag"),
        ("/api/v1/environments", "environment"),
    ],
)
async def test_a_name_searched_for_as_stored_is_found(
    module_client: httpx.AsyncClient, path: str, resource_type: str
) -> None:
    tenant: Tenant = await new_tenant(module_client)
    for body in _bodies(resource_type):
        made = await tenant.call("POST", path, body=body)
        assert made.status_code == 201, made.text
    for key, name in NAMES.items():
        found = await tenant.call("GET", f"{path}?filter[search]={quote(name)}")
        assert found.status_code == 200, found.text
        assert [item["id"] for item in found.json()["data"]] == [key], name
        upper = await tenant.call("GET", f"{path}?filter[search]={quote(name.upper())}")
        assert key in [item["id"] for item in upper.json()["data"]], name
