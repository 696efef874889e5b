"""What every request pays for, kept from coming back (docs/benchmarks/api.notes.md):
no route runs a dependency or a handler in FastAPI's thread pool (a plain
function there costs each request a thread hop and GIL hand-offs), and a
serving worker has left what startup built out of garbage collection (a full
collection walked it with the event loop stopped), and a request leaves no
reference cycle behind for the collector."""

from __future__ import annotations

import gc
import inspect
import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, APIRouter
from sqlalchemy.engine import URL
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from service.app import create_app
from tests.support.api import JSONAPI, api_app, client_of, document, new_tenant
from tests.support.configs import settings_for


def calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    """The endpoint and every dependency under it."""
    if dependant.call is not None:
        yield dependant.call
    for dependency in dependant.dependencies:
        yield from calls(dependency)


def routes_and_calls(
    routes: list[BaseRoute], outer: str = "", own: str = ""
) -> Iterator[tuple[str, Any]]:
    """(path, call) of every endpoint and dependency, through included routers
    (which FastAPI keeps as routers of their own, with their own dependencies;
    a route's path holds its own router's prefix, not those above it)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield from ((outer + route.path, call) for call in calls(route.dependant))
        included = getattr(route, "original_router", None)
        if isinstance(included, APIRouter):
            here = outer + own
            yield from (
                (here + included.prefix, depends.dependency) for depends in included.dependencies
            )
            yield from routes_and_calls(included.routes, here, included.prefix)


def runs_on_the_event_loop(call: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call)


def test_no_route_runs_a_dependency_or_a_handler_in_the_thread_pool() -> None:
    app = create_app(settings_for(URL.create("postgresql+asyncpg", database="unused")))
    found = list(routes_and_calls(app.routes))
    assert {path for path, _ in found} >= {
        "/v1/configs/{config_id}",
        "/api/v1/configs/{key:config_key}",
    }
    plain = sorted(
        {f"{path}: {call.__qualname__}" for path, call in found if not runs_on_the_event_loop(call)}
    )
    assert plain == []


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """The test process's own objects go back to the collector afterwards."""
    gc.unfreeze()
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("unfrozen")
async def test_a_started_worker_leaves_what_startup_built_out_of_garbage_collection(
    migrated_database: URL,
) -> None:
    app: FastAPI = create_app(settings_for(migrated_database))
    assert gc.get_freeze_count() == 0
    async with app.router.lifespan_context(app):
        # The app, its routes and their dependencies among them.
        assert gc.get_freeze_count() > 10_000


async def _asgi_call(app: ASGIApp, method: str, path: str, key: str, body: Any = None) -> int:
    """`app` called as uvicorn calls it, with nothing of a client's around it
    (an HTTP client in process makes garbage of its own)."""
    raw_path, _, query = path.partition("?")
    content = json.dumps(body).encode() if body is not None else b""
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": content, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    headers = [(b"host", b"service"), (b"authorization", f"Bearer {key}".encode())]
    if body is not None:
        headers += [(b"content-type", JSONAPI.encode()), (b"content-length", b"%d" % len(content))]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": raw_path,
        "raw_path": raw_path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }
    await app(scope, receive, send)
    return statuses[0]


ROUNDS = 10


@pytest.mark.usefixtures("unfrozen")
async def test_requests_leave_no_reference_cycles_for_the_collector(
    migrated_database: URL,
) -> None:
    """What a request builds is freed when its last reference goes: a cycle
    among a request's objects waits for the collector, piles up under load
    (a worker's peak memory) and makes the collections cost more CPU. Eight
    kinds of request, ten times each, with the collector keeping what it
    finds."""
    async with api_app(migrated_database) as app, client_of(app) as client:
        tenant = await new_tenant(client)
        config = await tenant.create("configs", {"key": "checkout", "name": "Checkout"})
        environment = next(iter(tenant.environments))
        created = iter(range(100))
        requests: list[tuple[str, str, Callable[[], Any], int]] = [
            ("GET", f"/v1/configs/{config['id']}", lambda: None, 200),
            (
                "GET",
                f"/v1/configs/{config['id']}/resolved?environment={environment}",
                lambda: None,
                200,
            ),
            ("GET", "/v1/configs?page[size]=50", lambda: None, 200),
            ("GET", f"/v1/configs/{uuid.uuid4()}", lambda: None, 404),
            ("GET", "/v1/configs/not-an-id", lambda: None, 422),
            (
                "POST",
                "/v1/configs",
                lambda: document("configs", {"key": f"made-{next(created)}", "name": "Made"}),
                201,
            ),
            ("POST", "/v1/configs", lambda: document("configs", {"key": 5}), 422),
            ("GET", "/api/v1/configs/checkout", lambda: None, 200),
        ]

        async def run_all() -> list[int]:
            return [
                await _asgi_call(app, method, path, tenant.owner_key, body())
                for method, path, body, _ in requests
            ]

        # Once first: a first request fills caches that live on.
        await run_all()
        gc.collect()
        gc.garbage.clear()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            statuses = [status for _ in range(ROUNDS) for status in await run_all()]
            gc.collect()
            left = Counter(type(found).__qualname__ for found in gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
    assert statuses == [expected for _ in range(ROUNDS) for *_, expected in requests]
    # Fewer objects left than requests made: what the app's own work runs
    # beside the requests (a pool's connection closed, say, whose transport
    # and socket hold each other) may leave a few, once; a request's cycle
    # left about 70 of its own, every time.
    assert sum(left.values()) < len(statuses), left.most_common(10)
