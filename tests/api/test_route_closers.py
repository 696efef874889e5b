"""A request's connection is opened by a plain dependency (`database`,
`key_read`) and closed by its route once the handler is done
(service/api/json_body.py `close_when_handled`): only a JsonApiRoute closes
it. Every route of the service that takes one must be one, and a route that
is not refuses to open one rather than leak it."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

import service.api
import service.api.sdk
from service.api.dependencies import database, key_read
from service.api.json_body import JsonApiRoute, close_when_handled

OPENERS = {database, key_read}


def _routes() -> Iterator[tuple[str, APIRoute]]:
    for package in (service.api, service.api.sdk):
        for module in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
            router = getattr(importlib.import_module(module.name), "router", None)
            if isinstance(router, APIRouter):
                for route in router.routes:
                    if isinstance(route, APIRoute):
                        yield module.name, route


def _calls(dependant: Dependant) -> Iterator[Any]:
    for dependency in dependant.dependencies:
        yield dependency.call
        yield from _calls(dependency)


def test_every_route_that_opens_a_connection_closes_it() -> None:
    opening = [
        (module, route) for module, route in _routes() if OPENERS & set(_calls(route.dependant))
    ]
    # The API's routes that read or write, the SDK's among them.
    assert len(opening) > 40
    assert {module for module, _ in opening} >= {
        "service.api.configs",
        "service.api.usage",
        "service.api.sdk.events",
        "service.api.sdk.configs",
    }
    assert [
        f"{module} {route.path}" for module, route in opening if not isinstance(route, JsonApiRoute)
    ] == []


def test_outside_a_json_api_route_nothing_is_opened() -> None:
    """What a plain route's request would meet: no route to close, so the
    dependency fails before it opens (a 500 in a test, never a leak)."""
    with pytest.raises(RuntimeError, match="JsonApiRoute"):
        close_when_handled({"type": "http"}, _never)


async def _never(_: BaseException | None) -> None:  # pragma: no cover
    raise AssertionError


async def test_every_close_runs_when_one_fails_and_its_error_is_the_answer() -> None:
    """Two things opened for one handler: the one opened last is closed
    first; when its close fails (a commit), the other is still closed, told
    of that error (it rolls back), and the request fails with it."""
    told: list[tuple[str, BaseException | None]] = []

    class CommitFailed(Exception):
        pass

    def opener(name: str, fails: bool) -> Any:
        async def open_(request: Request) -> None:
            async def close(error: BaseException | None) -> None:
                told.append((name, error))
                if fails:
                    raise CommitFailed(name)

            close_when_handled(request.scope, close)

        return open_

    router = APIRouter(route_class=JsonApiRoute)

    @router.get(
        "/both",
        dependencies=[Depends(opener("first", False)), Depends(opener("second", True))],
    )
    async def both() -> dict[str, str]:
        return {"done": "yes"}

    app = FastAPI()
    app.include_router(router)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        with pytest.raises(CommitFailed):
            await client.get("/both")
    assert [name for name, _ in told] == ["second", "first"]
    assert told[0][1] is None
    assert isinstance(told[1][1], CommitFailed)
