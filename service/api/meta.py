"""What this service is and which schema it serves."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from sqlalchemy import text

from service import __version__
from service.api.dependencies import Database, Viewer
from service.api.errors import JsonApiResponse
from service.api.jsonapi import respond, single
from service.api.routers import V1_PATH, dialect_router
from service.api.schemas import Described, single_document

router = dialect_router(V1_PATH, tags=["service"])
SERVICE_ID = "platform-service"


class ServiceView(Described):
    version: str
    schema_revision: str = Field(description="The schema's head revisions, comma-separated")


class ServiceResource(Described):
    type: Literal["service"]
    id: Literal["platform-service"]
    attributes: ServiceView


@router.get(
    "/service",
    response_class=JsonApiResponse,
    response_model=single_document(ServiceResource),
    summary="The service and its schema revision",
)
async def service_info(_: Viewer, connection: Database) -> JsonApiResponse:
    revisions = (await connection.scalars(text("SELECT version_num FROM alembic_version"))).all()
    attributes = {"version": __version__, "schema_revision": ",".join(sorted(revisions))}
    return respond(single({"type": "service", "id": SERVICE_ID, "attributes": attributes}))
