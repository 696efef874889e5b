"""The smplkit SDK's dialect of the API, served under /api/v1 beside /v1, over
the same tables, keys, roles and error envelope (docs/sdk.md)."""

from fastapi import APIRouter, Depends

from service.api.dependencies import require_ready
from service.api.errors import ERROR_RESPONSES, JsonApiResponse
from service.api.sdk import account, configs, discovery, environments, events, flags, metrics

router = APIRouter(
    prefix="/api/v1",
    dependencies=[Depends(require_ready)],
    default_response_class=JsonApiResponse,
    responses=ERROR_RESPONSES,
)
# Discovery first: POST /configs/bulk is no config's key.
router.include_router(discovery.router)
router.include_router(configs.router)
router.include_router(events.router)
router.include_router(environments.router)
router.include_router(account.router)
router.include_router(flags.router)
router.include_router(metrics.router)
