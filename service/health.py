"""Probes and metrics. Liveness never touches the database; readiness is the
migration bootstrap's route (alembic_lockstep/serving.py): it reports the
migration, and once the schema is at head, whether the database answers and
is still at this code's head.

Readiness's status code is public, for probes; what its body says beyond
"status" (errors, the lock holder's host and address) and /metrics are for the
operator: served with the operator token (Authorization: Bearer OPERATOR_TOKEN).
"""

from __future__ import annotations

from alembic_lockstep import readiness_router
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from service.api.dependencies import is_operator, require_operator
from service.api.errors import ERROR_RESPONSES
from service.api.openapi import OPERATOR_ONLY
from service.observability.metrics import CONTENT_TYPE
from service.state import state_of

router = APIRouter(tags=["health"])


# GET and HEAD, as readiness (alembic_lockstep): some load balancers' health
# checks send HEAD, which a GET route of FastAPI's answers with 405.
@router.get("/livez", summary="Liveness: the process serves requests")
@router.head("/livez", summary="Liveness: the process serves requests")
async def livez() -> dict[str, str]:
    return {"status": "alive"}


router.include_router(readiness_router(show_details=is_operator))


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
    return Response(state_of(request)["metrics"].exposition(), media_type=CONTENT_TYPE)
