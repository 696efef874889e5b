"""Helpers for API tests: an app at head, accounts, keys and requests."""

from __future__ import annotations

import asyncio
import io
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from sqlalchemy.engine import URL
from starlette.types import ASGIApp

from service.app import create_app
from tests.support.configs import eventually, settings_for
from tests.support.processes import OPERATOR_TOKEN

JSONAPI = "application/vnd.api+json"


# A bound, not a claim about speed: the lifespan starts the migration as a task
# and yields at once, but a loaded machine took over 10 s to get there.
STARTUP_WAIT = 60
# The same kind of bound for the shutdown. Should it pass, every task's stack
# is printed first (_report_stuck_shutdown): a failure says where it waited.
SHUTDOWN_WAIT = 30


@asynccontextmanager
async def api_client(url: URL, **overrides: object) -> AsyncIterator[httpx.AsyncClient]:
    """A ready app on `url`, through its real lifespan."""
    async with api_app(url, **overrides) as app, client_of(app) as client:
        yield client


@asynccontextmanager
async def api_app(url: URL, **overrides: object) -> AsyncIterator[ASGIApp]:
    """A ready app on `url` (its real lifespan running), for clients of it."""
    app = create_app(settings_for(url, **overrides))
    watchdog: asyncio.Task[None] | None = None
    try:
        async with LifespanManager(
            app, startup_timeout=STARTUP_WAIT, shutdown_timeout=SHUTDOWN_WAIT
        ) as manager:
            async with client_of(manager.app) as client:

                async def ready() -> bool:
                    return (await client.get("/readyz")).status_code == 200

                await eventually(ready)
            try:
                yield manager.app
            finally:
                watchdog = asyncio.create_task(_report_stuck_shutdown(SHUTDOWN_WAIT - 2))
    finally:
        if watchdog is not None:
            watchdog.cancel()


async def _report_stuck_shutdown(after: float) -> None:
    """Print where every task of the loop waits, once a shutdown has taken `after` seconds."""
    await asyncio.sleep(after)
    report = io.StringIO()
    for task in asyncio.all_tasks():
        if task is not asyncio.current_task():
            task.print_stack(file=report)
    print(
        f"the app's shutdown is still running after {after}s:\n{report.getvalue()}", file=sys.stderr
    )


def client_of(app: ASGIApp, peer: tuple[str, int] = ("127.0.0.1", 123)) -> httpx.AsyncClient:
    """A client of `app` whose requests come from `peer` (an address, a port)."""
    transport = httpx.ASGITransport(app=app, client=peer)
    return httpx.AsyncClient(transport=transport, base_url="http://service")


@dataclass
class Tenant:
    """An account as its owner sees it, with keys for other roles on demand."""

    client: httpx.AsyncClient
    account_id: str
    owner_key: str
    owner_id: str
    environments: dict[str, str]

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.owner_key}", "Content-Type": JSONAPI}

    async def call(
        self, method: str, path: str, key: str | None = None, body: Any = None, **kwargs: Any
    ) -> httpx.Response:
        return await self.client.request(
            method, path, headers=self.headers(key), json=body, **kwargs
        )

    async def create(
        self,
        resource_type: str,
        attributes: dict[str, Any],
        key: str | None = None,
        **relationships: str | None,
    ) -> dict[str, Any]:
        body = document(resource_type, attributes, **relationships)
        response = await self.call("POST", f"/v1/{resource_type}", key, body)
        assert response.status_code == 201, response.text
        return response.json()["data"]  # type: ignore[no-any-return]

    async def user_with_key(self, role: str) -> tuple[str, str]:
        """A new user of this role and an API key acting as them: (user id, key)."""
        user = await self.create(
            "users", {"email": f"{role.lower()}-{uuid.uuid4().hex[:8]}@example.test", "role": role}
        )
        key = await self.create("api-keys", {"name": f"{role} key"}, user=user["id"])
        return user["id"], key["attributes"]["secret"]


def document(
    resource_type: str,
    attributes: dict[str, Any],
    resource_id: str | None = None,
    **relationships: str | None,
) -> dict[str, Any]:
    data: dict[str, Any] = {"type": resource_type, "attributes": attributes}
    if resource_id:
        data["id"] = resource_id
    if relationships:
        related_types = {"user": "users", "parent": "configs"}
        data["relationships"] = {
            name: {"data": {"type": related_types[name], "id": value} if value else None}
            for name, value in relationships.items()
        }
    return {"data": data}


async def new_tenant(client: httpx.AsyncClient, name: str = "Acme") -> Tenant:
    email = f"owner-{uuid.uuid4().hex[:8]}@{name.lower()}.test"
    response = await client.post(
        "/v1/accounts",
        headers={"Authorization": f"Bearer {OPERATOR_TOKEN}", "Content-Type": JSONAPI},
        json=document("accounts", {"name": name, "owner": {"email": email, "role": "OWNER"}}),
    )
    assert response.status_code == 201, response.text
    included = response.json()["included"]
    key = next(item for item in included if item["type"] == "api-keys")
    owner = next(item for item in included if item["type"] == "users")
    environments = {
        item["attributes"]["key"]: item["id"] for item in included if item["type"] == "environments"
    }
    return Tenant(
        client,
        response.json()["data"]["id"],
        key["attributes"]["secret"],
        owner["id"],
        environments,
    )


def create_account_over_http(port: int, name: str = "Account") -> str:
    """Create an account on a real server through the operator route; its first API key."""
    response = httpx.post(
        f"http://127.0.0.1:{port}/v1/accounts",
        headers={"Authorization": f"Bearer {OPERATOR_TOKEN}", "Content-Type": JSONAPI},
        json=document(
            "accounts", {"name": name, "owner": {"email": "o@example.test", "role": "OWNER"}}
        ),
        timeout=10,
    )
    assert response.status_code == 201, response.text
    included = response.json()["included"]
    return str(next(i for i in included if i["type"] == "api-keys")["attributes"]["secret"])


def account_with_key(client: httpx.Client, name: str = "Acme") -> tuple[str, list[dict[str, Any]]]:
    """Create an account through a synchronous client: (its owner's key, what it included)."""
    created = client.post(
        "/v1/accounts",
        headers={"Authorization": f"Bearer {OPERATOR_TOKEN}", "Content-Type": JSONAPI},
        json=document(
            "accounts",
            {"name": name, "owner": {"email": f"owner@{name.lower()}.test", "role": "OWNER"}},
        ),
    )
    assert created.status_code == 201, created.text
    included: list[dict[str, Any]] = created.json()["included"]
    key = next(item for item in included if item["type"] == "api-keys")
    return str(key["attributes"]["secret"]), included


# About 5 MiB a page of /api/v1/configs: more than loopback's kernel buffers
# take of an unread answer (about 2.8 MiB here), so most of it stays in the worker.
LARGE_PAGE_CONFIGS = 160


def account_with_a_large_page(port: int) -> str:
    """A new account on a real server whose page of configs is about 5 MiB; its key."""
    key = create_account_over_http(port, "Large")
    headers = {"Authorization": f"Bearer {key}", "Content-Type": JSONAPI}
    for number in range(LARGE_PAGE_CONFIGS):
        items = {f"k{n}": {"value": "v" * 290, "type": "STRING"} for n in range(100)}
        attributes = {"name": "L", "items": items}
        body = {"data": {"type": "config", "id": f"large-{number}", "attributes": attributes}}
        created = httpx.post(f"http://127.0.0.1:{port}/api/v1/configs", json=body, headers=headers)
        assert created.status_code == 201, created.text
    return key
