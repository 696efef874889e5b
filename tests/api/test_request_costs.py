"""What every request pays for, kept from coming back (docs/benchmarks/api.notes.md):
no route runs a dependency or a handler in FastAPI's thread pool (a plain
function there costs each request a thread hop and GIL hand-offs), and a
serving worker has left what startup built out of garbage collection (a full
collection walked it with the event loop stopped)."""

from __future__ import annotations

import gc
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, APIRouter
from sqlalchemy.engine import URL
from starlette.routing import BaseRoute

from service.app import create_app
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
