"""Probes. Liveness never touches the database; readiness reports the migration,
and once the schema is at head, whether the database answers and is still at
this code's head (service/migrations/watch.py).

Readiness's status code is public, for probes; what its body says beyond
"status" (errors, the lock holder's host and address) and /metrics are for the
operator: served with the operator token (Authorization: Bearer OPERATOR_TOKEN).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from service.api.dependencies import is_operator, require_operator
from service.api.errors import ERROR_RESPONSES
from service.api.openapi import OPERATOR_ONLY
from service.migrations.errors import describe_error
from service.migrations.scripts import current_revisions
from service.migrations.status import MigrationStatus
from service.observability.metrics import CONTENT_TYPE, Metrics

router = APIRouter(tags=["health"])
DATABASE_CHECK_SECONDS = 2.0


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
    if not status.ready:
        return _readiness(request, status.as_json(), 503)
    # At head: ready only while the database answers, so a restarting database
    # takes the replica out of rotation instead of failing its requests; and
    # only while it is still at this code's head.
    problem = await _database_problem(request)
    body = status.as_json()
    if problem is not None:
        body.update(status="unready", database="unreachable", error=problem)
        return _readiness(request, body, 503)
    return _readiness(request, body, 200 if status.ready else 503)


def _readiness(request: Request, body: dict[str, object], status_code: int) -> JSONResponse:
    """The whole account for the operator; only "status" for anyone else."""
    shown = body if is_operator(request) else {"status": body["status"]}
    return JSONResponse(shown, status_code=status_code)


async def _database_problem(request: Request) -> str | None:
    try:
        async with asyncio.timeout(DATABASE_CHECK_SECONDS):
            async with request.state.engine.connect() as connection:
                current = await current_revisions(connection)
            await request.state.schema_watch.noticed(current)
    except Exception as error:
        return describe_error(error) if not isinstance(error, TimeoutError) else "no answer in time"
    return None


@router.get(
    "/metrics",
    dependencies=[Depends(require_operator)],
    openapi_extra=OPERATOR_ONLY,
    summary="Prometheus metrics of this worker process (operator token)",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        **{status: ERROR_RESPONSES[status] for status in (401, 403, 429)},
    },
)
async def metrics(request: Request) -> Response:
    collected: Metrics = request.app.state.metrics
    return Response(collected.exposition(), media_type=CONTENT_TYPE)
