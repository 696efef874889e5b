"""Probes. Liveness never touches the database; readiness reports the migration."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from service.metrics import CONTENT_TYPE, Metrics
from service.status import MigrationStatus

router = APIRouter(tags=["health"])


@router.get("/livez", summary="Liveness: the process serves requests")
async def livez() -> dict[str, str]:
    return {"status": "alive"}


@router.get(
    "/readyz",
    summary="Readiness: the schema is at head",
    responses={503: {"description": "Not ready; the body says what the migration is doing"}},
)
async def readyz(request: Request) -> JSONResponse:
    status: MigrationStatus = request.state.migration
    return JSONResponse(status.as_json(), status_code=200 if status.ready else 503)


@router.get("/metrics", summary="Prometheus metrics of this worker process")
async def metrics(request: Request) -> Response:
    collected: Metrics = request.app.state.metrics
    return Response(collected.exposition(), media_type=CONTENT_TYPE)
