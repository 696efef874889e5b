"""The app serves the API's routes itself, one flat list, each behind the
readiness gate (service/api/routers.py): no router included in another,
whose lazy matching cost a tenth of a point read, and no module's routes left
out of the list or out of the gate."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from fastapi import APIRouter
from fastapi.routing import APIRoute
from sqlalchemy.engine import URL

import service.api
import service.api.sdk
from service.api.dependencies import READS_BY_KEY
from service.api.routers import GatedRoute
from service.app import create_app
from tests.support.configs import settings_for

DIALECTS = ("/v1/", "/api/v1/")


def _module_routers() -> list[APIRouter]:
    found = []
    for package in (service.api, service.api.sdk):
        for module in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
            router = getattr(importlib.import_module(module.name), "router", None)
            if isinstance(router, APIRouter):
                found.append(router)
    return found


def test_every_module_router_is_served() -> None:
    listed = [*service.api.ROUTERS, *service.api.sdk.ROUTERS]
    assert len(listed) == len(set(map(id, listed)))
    assert {id(router) for router in _module_routers()} == {id(router) for router in listed}


def test_the_app_serves_each_api_route_itself_behind_the_readiness_gate() -> None:
    app = create_app(settings_for(URL.create("postgresql+asyncpg", database="unused")))
    served = [
        route
        for route in app.router.routes
        if isinstance(route, APIRoute) and route.path.startswith(DIALECTS)
    ]
    expected = [
        route
        for router in (*service.api.ROUTERS, *service.api.sdk.ROUTERS)
        for route in router.routes
    ]
    # The same route objects, in the order the routers are listed (configs first).
    assert [id(route) for route in served] == [id(route) for route in expected]
    assert len(served) > 50
    assert [route.path for route in served if not isinstance(route, GatedRoute)] == []


def test_the_reads_by_key_are_marked_so_and_only_they() -> None:
    """A handler that asks for its read (`reader_of`) has its route take the
    key (`reads_by_key`): unmarked, it could not answer; marked without asking,
    its route would take a connection for nothing."""
    app = create_app(settings_for(URL.create("postgresql+asyncpg", database="unused")))
    endpoints = {route.endpoint for route in app.router.routes if isinstance(route, APIRoute)}
    asking = {
        endpoint for endpoint in endpoints if "reader_of(request)" in inspect.getsource(endpoint)
    }
    assert len(asking) >= 13
    assert asking == READS_BY_KEY
