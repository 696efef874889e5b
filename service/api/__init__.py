"""The versioned REST API (JSON:API 1.1), served under /v1 once the schema is ready."""

from fastapi import APIRouter, Depends

from service.api import accounts, api_keys, configs, environments, meta, users
from service.api.dependencies import require_ready
from service.api.errors import ERROR_RESPONSES, JsonApiResponse

router = APIRouter(
    prefix="/v1",
    dependencies=[Depends(require_ready)],
    default_response_class=JsonApiResponse,
    responses=ERROR_RESPONSES,
)
for module in (meta, accounts, users, environments, api_keys, configs):
    router.include_router(module.router)
