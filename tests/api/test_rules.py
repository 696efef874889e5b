"""Rules that hold for every route: tenant isolation, roles, the error envelope,
refused requests that write nothing, pagination."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import URL

from tests.support.api import JSONAPI, Tenant, document, new_tenant
from tests.support.postgres import connect

Request = tuple[str, str, Any]
RouteFactory = Callable[[Tenant], Awaitable[Request]]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _user(t: Tenant) -> str:
    return str(
        (await t.create("users", {"email": f"{unique('u')}@example.test", "role": "VIEWER"}))["id"]
    )


async def _environment(t: Tenant) -> str:
    return str((await t.create("environments", {"key": unique("env"), "name": "E"}))["id"])


async def _config(t: Tenant) -> str:
    return str(
        (await t.create("configs", {"key": unique("cfg"), "name": "C", "items": {"a": 1}}))["id"]
    )


async def _flag(t: Tenant) -> str:
    attributes = {"key": unique("flag"), "name": "F", "type": "BOOLEAN", "default": False}
    return str((await t.create("flags", attributes))["id"])


async def _key(t: Tenant) -> str:
    """A key of a VIEWER: an ADMIN may act on it (not on the OWNER's keys)."""
    return str((await t.create("api-keys", {"name": "k"}, user=await _user(t)))["id"])


def route(
    method: str,
    path: str,
    target: Callable[[Tenant], Awaitable[str]] | None = None,
    body: Callable[[str | None], Any] | None = None,
) -> RouteFactory:
    async def build(t: Tenant) -> Request:
        target_id = await target(t) if target else None
        return method, path.format(id=target_id), body(target_id) if body else None

    return build


# (route, minimum role). Every /v1 route but the operator's POST /v1/accounts.
ROUTES: dict[str, tuple[RouteFactory, str]] = {
    "GET /v1/service": (route("GET", "/v1/service"), "VIEWER"),
    "GET /v1/account": (route("GET", "/v1/account"), "VIEWER"),
    "PATCH /v1/account": (
        route("PATCH", "/v1/account", body=lambda _: document("accounts", {"name": "Renamed"})),
        "OWNER",
    ),
    "GET /v1/users": (route("GET", "/v1/users"), "VIEWER"),
    "POST /v1/users": (
        route(
            "POST",
            "/v1/users",
            body=lambda _: document(
                "users", {"email": f"{unique('n')}@example.test", "role": "VIEWER"}
            ),
        ),
        "ADMIN",
    ),
    "GET /v1/users/{id}": (route("GET", "/v1/users/{id}", _user), "VIEWER"),
    "PATCH /v1/users/{id}": (
        route(
            "PATCH",
            "/v1/users/{id}",
            _user,
            lambda i: document("users", {"attributes": {"x": 1}}, i),
        ),
        "ADMIN",
    ),
    "DELETE /v1/users/{id}": (route("DELETE", "/v1/users/{id}", _user), "ADMIN"),
    "GET /v1/environments": (route("GET", "/v1/environments"), "VIEWER"),
    "POST /v1/environments": (
        route(
            "POST",
            "/v1/environments",
            body=lambda _: document("environments", {"key": unique("e"), "name": "E"}),
        ),
        "ADMIN",
    ),
    "GET /v1/environments/{id}": (route("GET", "/v1/environments/{id}", _environment), "VIEWER"),
    "PATCH /v1/environments/{id}": (
        route(
            "PATCH",
            "/v1/environments/{id}",
            _environment,
            lambda i: document("environments", {"name": "N"}, i),
        ),
        "ADMIN",
    ),
    "DELETE /v1/environments/{id}": (
        route("DELETE", "/v1/environments/{id}", _environment),
        "ADMIN",
    ),
    "GET /v1/api-keys": (route("GET", "/v1/api-keys"), "ADMIN"),
    "POST /v1/api-keys": (
        route("POST", "/v1/api-keys", body=lambda _: document("api-keys", {"name": "new"})),
        "ADMIN",
    ),
    "GET /v1/api-keys/{id}": (route("GET", "/v1/api-keys/{id}", _key), "ADMIN"),
    "DELETE /v1/api-keys/{id}": (route("DELETE", "/v1/api-keys/{id}", _key), "ADMIN"),
    "GET /v1/configs": (route("GET", "/v1/configs"), "VIEWER"),
    "POST /v1/configs": (
        route(
            "POST",
            "/v1/configs",
            body=lambda _: document("configs", {"key": unique("c"), "name": "C"}),
        ),
        "MEMBER",
    ),
    "GET /v1/configs/{id}": (route("GET", "/v1/configs/{id}", _config), "VIEWER"),
    "GET /v1/configs/{id}/resolved": (
        route("GET", "/v1/configs/{id}/resolved?environment=production", _config),
        "VIEWER",
    ),
    "PATCH /v1/configs/{id}": (
        route(
            "PATCH", "/v1/configs/{id}", _config, lambda i: document("configs", {"name": "N"}, i)
        ),
        "MEMBER",
    ),
    "DELETE /v1/configs/{id}": (route("DELETE", "/v1/configs/{id}", _config), "MEMBER"),
    "GET /v1/flags": (route("GET", "/v1/flags"), "VIEWER"),
    "POST /v1/flags": (
        route(
            "POST",
            "/v1/flags",
            body=lambda _: document(
                "flags", {"key": unique("f"), "name": "F", "type": "STRING", "default": "a"}
            ),
        ),
        "MEMBER",
    ),
    "GET /v1/flags/{id}": (route("GET", "/v1/flags/{id}", _flag), "VIEWER"),
    "PATCH /v1/flags/{id}": (
        route("PATCH", "/v1/flags/{id}", _flag, lambda i: document("flags", {"name": "N"}, i)),
        "MEMBER",
    ),
    "DELETE /v1/flags/{id}": (route("DELETE", "/v1/flags/{id}", _flag), "MEMBER"),
    "POST /v1/flags/{id}/evaluate": (
        route(
            "POST",
            "/v1/flags/{id}/evaluate",
            _flag,
            lambda _: {"data": {"type": "flag-evaluations", "attributes": {}}},
        ),
        "VIEWER",
    ),
    "GET /v1/usage": (route("GET", "/v1/usage"), "VIEWER"),
}
RANK = {"VIEWER": 0, "MEMBER": 1, "ADMIN": 2, "OWNER": 3}


@pytest.fixture
def client(module_client: httpx.AsyncClient) -> httpx.AsyncClient:
    """The module's shared app (tests/conftest.py): each test makes its own account."""
    return module_client


def test_the_route_table_covers_every_api_route() -> None:
    from service.app import create_app
    from settings import Settings
    from tests.support.processes import OPERATOR_TOKEN

    app = create_app(
        Settings(database_url="postgresql://u:p@localhost/x", operator_token=OPERATOR_TOKEN)
    )
    names = {
        "{user_id}": "{id}",
        "{environment_id}": "{id}",
        "{key_id}": "{id}",
        "{config_id}": "{id}",
        "{flag_id}": "{id}",
    }
    served = set()
    for path, operations in app.openapi()["paths"].items():
        for placeholder, generic in names.items():
            path = path.replace(placeholder, generic)
        served |= {f"{method.upper()} {path}" for method in operations if path.startswith("/v1")}
    assert served - {"POST /v1/accounts"} == set(ROUTES)


@pytest.mark.parametrize("name", sorted(ROUTES))
async def test_another_accounts_key_never_reaches_these_objects(
    client: httpx.AsyncClient, name: str
) -> None:
    victim, intruder = await new_tenant(client, "Victim"), await new_tenant(client, "Intruder")
    build, _ = ROUTES[name]
    method, path, body = await build(victim)
    before = await _snapshot(victim)
    response = await intruder.call(method, path, body=body)
    if "{id}" in name:
        assert response.status_code == 404, response.text
        assert response.json()["errors"][0]["status"] == "404"
    else:
        # Collection and own-account routes act on the intruder's own account.
        assert response.status_code < 400, response.text
        assert victim.account_id not in response.text
        for victim_id in await _all_ids(victim):
            assert victim_id not in response.text
    assert await _snapshot(victim) == before


async def test_foreign_ids_in_relationships_answer_404(client: httpx.AsyncClient) -> None:
    victim, intruder = await new_tenant(client, "Victim"), await new_tenant(client, "Intruder")
    parent = await _config(victim)
    as_parent = await intruder.call(
        "POST", "/v1/configs", body=document("configs", {"key": "x", "name": "X"}, parent=parent)
    )
    assert as_parent.status_code == 404
    key_for = await intruder.call(
        "POST", "/v1/api-keys", body=document("api-keys", {"name": "x"}, user=victim.owner_id)
    )
    assert key_for.status_code == 404
    own = await _config(intruder)
    reparent = await intruder.call(
        "PATCH", f"/v1/configs/{own}", body=document("configs", {}, own, parent=parent)
    )
    assert reparent.status_code == 404


@pytest.mark.parametrize("role", sorted(RANK))
@pytest.mark.parametrize("name", sorted(ROUTES))
async def test_roles_allow_and_refuse(client: httpx.AsyncClient, name: str, role: str) -> None:
    tenant = await new_tenant(client)
    _, key = (None, tenant.owner_key) if role == "OWNER" else await tenant.user_with_key(role)
    build, minimum = ROUTES[name]
    method, path, body = await build(tenant)
    response = await tenant.call(method, path, key, body)
    if RANK[role] >= RANK[minimum]:
        assert response.status_code < 400, (role, response.text)
    else:
        assert response.status_code == 403, (role, response.text)
        assert response.json()["errors"][0]["status"] == "403"


async def _all_ids(tenant: Tenant) -> list[str]:
    ids = [tenant.owner_id, *tenant.environments.values()]
    for collection in ("users", "configs", "api-keys", "environments"):
        ids += [
            item["id"] for item in (await tenant.call("GET", f"/v1/{collection}")).json()["data"]
        ]
    return ids


async def _snapshot(tenant: Tenant) -> list[Any]:
    return [
        (await tenant.call("GET", f"/v1/{c}", params={"page[size]": "100"})).json()["data"]
        for c in ("users", "configs", "api-keys", "environments")
    ] + [(await tenant.call("GET", "/v1/account")).json()["data"]]


# --- the error envelope, and refused requests write nothing -------------------


async def _row_counts(url: URL) -> dict[str, int]:
    connection = await connect(url)
    try:
        return {
            t: await connection.fetchval(f"SELECT count(*) FROM {t}")
            for t in ("accounts", "users", "environments", "api_keys", "configs")
        }
    finally:
        await connection.close()


@pytest.mark.parametrize(
    ("content", "content_type", "status", "where"),
    [
        (b'{"data": {"type": "users", "attributes": {"email": ', JSONAPI, 400, None),
        (b"\xff\xfe not utf-8", JSONAPI, 400, None),
        (b"[]", JSONAPI, 422, None),
        (b'{"data": {"type": "users"}}', JSONAPI, 422, "/data/attributes"),
        (
            b'{"data": {"type": "users", "attributes": {"email": 5}}}',
            JSONAPI,
            422,
            "/data/attributes/email",
        ),
        (
            b'{"data": {"type": "users", "attributes": {"email": "a@b.test", "admin": true}}}',
            JSONAPI,
            422,
            "/data/attributes/admin",
        ),
        (
            b'{"data": {"type": "configs", "attributes": {"email": "a@b.test"}}}',
            JSONAPI,
            409,
            "/data/type",
        ),
        (
            b'{"data": {"type": "users", "attributes": {"email": "a@b.test"}}}',
            "text/plain",
            415,
            None,
        ),
        (
            b'{"data": {"type": "users", "attributes": {"email": "a@b.test"}}}',
            JSONAPI + "; charset=utf-8",
            415,
            None,
        ),
        (
            b'{"data": {"type": "users", "attributes": {"email": "a@b.test", "attributes": {"k": "'
            + b"x" * 2_000_000
            + b'"}}}}',
            JSONAPI,
            413,
            None,
        ),
        (b"[" * 100_000 + b"]" * 100_000, JSONAPI, 400, None),
    ],
)
async def test_bad_bodies_get_clear_errors_and_write_nothing(
    client: httpx.AsyncClient,
    module_database: URL,
    content: bytes,
    content_type: str,
    status: int,
    where: str | None,
) -> None:
    tenant = await new_tenant(client)
    before = await _row_counts(module_database)
    response = await client.post(
        "/v1/users",
        content=content,
        headers={"Authorization": f"Bearer {tenant.owner_key}", "Content-Type": content_type},
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == JSONAPI
    errors = response.json()["errors"]
    assert all(set(error) >= {"status", "title", "detail"} for error in errors)
    assert errors[0]["status"] == str(status)
    if where:
        assert where in [error.get("source", {}).get("pointer") for error in errors], errors
    assert await _row_counts(module_database) == before


async def test_a_failure_half_way_writes_nothing(
    client: httpx.AsyncClient, module_database: URL
) -> None:
    """An account whose owner is refused leaves no account behind."""
    first = await new_tenant(client)
    email = (await first.call("GET", f"/v1/users/{first.owner_id}")).json()["data"]["attributes"][
        "email"
    ]
    before = await _row_counts(module_database)
    from tests.support.processes import OPERATOR_TOKEN

    body = document(
        "accounts",
        {"name": "Second", "owner": {"email": email, "role": "OWNER", "auth_provider": "!!bad"}},
    )
    response = await client.post(
        "/v1/accounts",
        headers={"Authorization": f"Bearer {OPERATOR_TOKEN}", "Content-Type": JSONAPI},
        json=body,
    )
    assert response.status_code == 422
    assert await _row_counts(module_database) == before


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ({"page[size]": "0"}, "page[size]"),
        ({"page[size]": "101"}, "page[size]"),
        ({"page[size]": "ten"}, "page[size]"),
        ({"page[after]": "not-a-cursor"}, "page[after]"),
        ({"page[after]": "WyJ4IiwgInkiXQ"}, "page[after]"),
        ({"page[after]": "' OR 1=1 --"}, "page[after]"),
        ({"sort": "email"}, "sort"),
        ({"filter[password]": "x"}, "filter[password]"),
        ({"filter[role]": "' OR '1'='1"}, "filter[role]"),
        ({"unknown": "1"}, "unknown"),
    ],
)
async def test_bad_query_parameters_are_refused(
    client: httpx.AsyncClient, query: dict[str, str], parameter: str
) -> None:
    tenant = await new_tenant(client)
    response = await tenant.call("GET", "/v1/users", params=query)
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["source"] == {"parameter": parameter}


async def test_unknown_ids_and_malformed_ids(client: httpx.AsyncClient) -> None:
    tenant = await new_tenant(client)
    assert (await tenant.call("GET", f"/v1/users/{uuid.uuid4()}")).status_code == 404
    malformed = await tenant.call("GET", "/v1/users/not-a-uuid")
    assert malformed.status_code == 422
    assert malformed.json()["errors"][0]["source"] == {"parameter": "user_id"}
    assert (await tenant.call("GET", "/v1/nothing-here")).status_code == 404


async def test_a_method_a_path_does_not_take_answers_405_naming_all_it_takes(
    client: httpx.AsyncClient,
) -> None:
    tenant = await new_tenant(client)
    listed = await tenant.call("OPTIONS", "/v1/users")
    assert listed.status_code == 405
    assert listed.headers["allow"] == "GET, POST"
    assert listed.json()["errors"][0]["status"] == "405"
    # A body on a method the path does not take is not checked as a body: 405, not 415.
    one = await tenant.call("PUT", f"/v1/users/{tenant.owner_id}", content=b"not json")
    assert one.status_code == 405
    assert one.headers["allow"] == "DELETE, GET, PATCH"
    owner = await tenant.call("GET", f"/v1/users/{tenant.owner_id}")
    assert owner.status_code == 200


# --- pagination ----------------------------------------------------------------


async def _walk(tenant: Tenant, path: str, size: int, sort: str = "created_at") -> list[str]:
    seen: list[str] = []
    url: str | None = f"{path}?page[size]={size}&sort={sort}"
    while url:
        body = (await tenant.call("GET", url)).json()
        seen += [item["id"] for item in body["data"]]
        url = body["links"]["next"]
    return seen


async def test_pagination_walks_every_row_once_in_both_directions(
    client: httpx.AsyncClient,
) -> None:
    tenant = await new_tenant(client)
    created = [await _config(tenant) for _ in range(23)]
    forward = await _walk(tenant, "/v1/configs", 5)
    assert forward == created
    assert await _walk(tenant, "/v1/configs", 7, "-created_at") == created[::-1]


async def test_pagination_is_stable_under_concurrent_inserts(client: httpx.AsyncClient) -> None:
    tenant = await new_tenant(client)
    existing = [await _config(tenant) for _ in range(30)]
    stop = asyncio.Event()

    async def insert_meanwhile() -> int:
        inserted = 0
        while not stop.is_set():
            await _config(tenant)
            inserted += 1
        return inserted

    writer = asyncio.create_task(insert_meanwhile())
    try:
        seen = await _walk(tenant, "/v1/configs", 4)
    finally:
        stop.set()
    assert await writer > 0
    assert len(seen) == len(set(seen)), "a row was listed twice"
    assert set(existing) <= set(seen), "a row that existed before the walk was skipped"
    assert seen[: len(existing)] == existing
