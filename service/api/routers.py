"""The routers of the API's two dialects: /v1 (JSON:API) and /api/v1 (the
smplkit SDK's, docs/sdk.md).

Each module of a dialect makes its router with `dialect_router`: the
dialect's prefix, its readiness gate (`GatedRoute`), its error responses
and its response class are the router's own, so each route it makes is
complete as it stands, and the app serves the routes themselves, one flat
list (service/app.py). A router included in another is matched lazily by
FastAPI: each request walks the tree of included routers twice (to match,
then to handle), asking each router for its version on the way. That cost
about 40 µs of CPU on a point read, a tenth of it
(docs/benchmarks/api.notes.md), for nothing a flat list does not do.
"""

from __future__ import annotations

from enum import Enum

from fastapi import APIRouter, Request

from service.api.dependencies import READS_BY_KEY, require_ready, take_reader
from service.api.errors import ERROR_RESPONSES, JsonApiResponse
from service.api.json_body import JsonApiRoute

V1_PATH = "/v1"
SDK_PATH = "/api/v1"


class GatedRoute(JsonApiRoute):
    """A route of a dialect: refused (503, `require_ready`) until the schema is
    at head, before anything else of its request is read or solved; then, for
    a read by the presented key (`reads_by_key`), the key and the read's
    connection. Both here, not among the handler's dependencies: FastAPI's
    solving of a dependency costs more than what it runs, on every request
    (docs/benchmarks/api.notes.md)."""

    async def prepare(self, request: Request) -> None:
        await require_ready(request)
        if self.endpoint in READS_BY_KEY:
            await take_reader(request)


def dialect_router(dialect: str, prefix: str = "", *, tags: list[str | Enum]) -> APIRouter:
    """A router of `dialect` (V1_PATH or SDK_PATH) for the routes under `prefix`."""
    return APIRouter(
        prefix=dialect + prefix,
        tags=tags,
        default_response_class=JsonApiResponse,
        responses=ERROR_RESPONSES,
        route_class=GatedRoute,
    )
