"""The versioned REST API (JSON:API 1.1), served under /v1 once the schema is ready."""

from fastapi import APIRouter, Depends

from service.api import meta
from service.api.dependencies import require_ready

router = APIRouter(prefix="/v1", dependencies=[Depends(require_ready)])
router.include_router(meta.router)
