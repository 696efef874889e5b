"""The versioned REST API (JSON:API 1.1), served under /v1 once the schema is ready."""

from fastapi import APIRouter, Depends

from service.api import accounts, api_keys, configs, environments, flags, meta, usage, users
from service.api.dependencies import require_ready
from service.api.errors import ERROR_RESPONSES, JsonApiResponse

router = APIRouter(
    prefix="/v1",
    dependencies=[Depends(require_ready)],
    default_response_class=JsonApiResponse,
    responses=ERROR_RESPONSES,
)
# A request is matched against the routes in this order: the configs, which
# the SDKs and most clients read, come first (matching cost a tenth of a
# point read's CPU when they came last: docs/benchmarks/api.notes.md).
for module in (configs, flags, meta, accounts, users, environments, api_keys, usage):
    router.include_router(module.router)
