"""What this service is and which schema it serves."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import text

from service import __version__
from service.api.dependencies import Database, Viewer
from service.api.errors import JsonApiResponse
from service.api.json_body import JsonApiRoute

router = APIRouter(tags=["service"], route_class=JsonApiRoute)


@router.get(
    "/service", response_class=JsonApiResponse, summary="The service and its schema revision"
)
async def service_info(_: Viewer, connection: Database) -> dict[str, Any]:
    revisions = (await connection.scalars(text("SELECT version_num FROM alembic_version"))).all()
    return {
        "data": {
            "type": "service",
            "id": "platform-service",
            "attributes": {"version": __version__, "schema_revision": ",".join(sorted(revisions))},
        },
        "jsonapi": {"version": "1.1"},
    }
