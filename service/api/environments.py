"""Environments of the caller's account (development, staging, production, ...).
The rules and the storage are the accounts core's (service/accounts/environments.py)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Request, Response
from pydantic import Field

from service.accounts import environments
from service.api.account_shapes import (
    ENVIRONMENTS,
    Color,
    EnvironmentKey,
    EnvironmentResource,
    Name,
    environment_resource,
)
from service.api.dependencies import Admin, Database, Viewer, reader_of, reads_by_key
from service.api.errors import JsonApiResponse
from service.api.jsonapi import (
    Document,
    JsonApiBody,
    JsonNumber,
    PositionedPageQuery,
    Strict,
    changed_attributes,
    expect_type,
    listing,
    respond,
    single,
)
from service.api.limits import MAX_POSITION
from service.api.queries import paged
from service.api.quotas import Quotas
from service.api.routers import V1_PATH, dialect_router
from service.api.schemas import list_document, single_document
from service.storage import read_in_account, rows

router = dialect_router(V1_PATH, "/environments", tags=["environments"])
TYPE = ENVIRONMENTS
CONFLICTS = {
    "environments_account_id_key_key": (
        "an environment with this key already exists",
        "/data/attributes/key",
    )
}
Position = Annotated[int, Field(ge=0, le=MAX_POSITION), JsonNumber]


class EnvironmentCreate(Strict):
    key: EnvironmentKey
    name: Name
    color: Color | None = None
    position: Position = 0


class EnvironmentUpdate(Strict):
    name: Name | None = None
    color: Color | None = None
    position: Position | None = None


EnvironmentDocument = single_document(EnvironmentResource)
EnvironmentList = list_document(EnvironmentResource)


@router.get(
    "", response_class=JsonApiResponse, response_model=EnvironmentList, summary="List environments"
)
async def list_environments(
    request: Request, page: PositionedPageQuery, caller: Viewer, connection: Database
) -> Response:
    found = await rows(
        connection,
        paged(
            environments.of_account(caller.account_id),
            environments.environments,
            page,
        ),
    )
    return listing(request, page, found, environment_resource)


@router.get(
    "/{environment_id}",
    response_class=JsonApiResponse,
    response_model=EnvironmentDocument,
    summary="Get an environment",
)
@reads_by_key
async def get_environment(environment_id: uuid.UUID, request: Request) -> JsonApiResponse:
    reader = reader_of(request)
    row = await read_in_account(
        reader.connection, reader, environments.environments, environment_id
    )
    return respond(single(environment_resource(row)))


@router.post(
    "",
    status_code=201,
    response_class=JsonApiResponse,
    response_model=EnvironmentDocument,
    summary="Create an environment (ADMIN)",
)
async def create_environment(
    body: Annotated[Document[EnvironmentCreate], JsonApiBody],
    caller: Admin,
    connection: Database,
    quotas: Quotas,
) -> JsonApiResponse:
    expect_type(body, TYPE)
    row = await environments.create(
        connection, quotas, caller.account_id, body.data.attributes.model_dump(), CONFLICTS
    )
    location = {"Location": f"/v1/environments/{row['id']}"}
    return respond(single(environment_resource(row)), 201, location)


@router.patch(
    "/{environment_id}",
    response_class=JsonApiResponse,
    response_model=EnvironmentDocument,
    summary="Update an environment (ADMIN)",
)
async def update_environment(
    environment_id: uuid.UUID,
    body: Annotated[Document[EnvironmentUpdate], JsonApiBody],
    caller: Admin,
    connection: Database,
) -> JsonApiResponse:
    expect_type(body, TYPE, environment_id)
    changes = changed_attributes(body, not_null=("name", "position"))
    current = await environments.get(connection, caller.account_id, environment_id)
    if not changes:
        return respond(single(environment_resource(current)))
    return respond(
        single(environment_resource(await environments.change(connection, current["id"], changes)))
    )


@router.delete(
    "/{environment_id}",
    status_code=204,
    summary="Delete an environment no config overrides and no flag targets (ADMIN)",
)
async def delete_environment(
    environment_id: uuid.UUID, caller: Admin, connection: Database
) -> Response:
    current = await environments.get(connection, caller.account_id, environment_id, lock=True)
    await environments.delete_unused(connection, caller.account_id, current)
    return Response(status_code=204)
