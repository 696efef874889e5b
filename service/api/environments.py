"""Environments of the caller's account (development, staging, production, ...)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from pydantic import Field, StringConstraints
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from service.api.dependencies import Admin, Database, Viewer
from service.api.errors import Conflict, JsonApiResponse
from service.api.json_body import JsonApiRoute
from service.api.jsonapi import (
    Document,
    JsonApiBody,
    PositionedPageQuery,
    Strict,
    changed_attributes,
    expect_type,
    listing,
    resource,
    respond,
    single,
)
from service.api.limits import MAX_POSITION, NO_NUL
from service.api.queries import paged
from service.api.quotas import Quotas
from service.api.schemas import (
    Described,
    attribute_names,
    list_document,
    resource_object,
    single_document,
)
from service.flags import store as flag_store
from service.models import Config, Environment, table
from service.quotas import Kind
from service.storage import conflict_from, one_in_account, rows

router = APIRouter(prefix="/environments", tags=["environments"], route_class=JsonApiRoute)
environments = table(Environment)
configs = table(Config)
TYPE = "environments"
CONFLICTS = {
    "environments_account_id_key_key": (
        "an environment with this key already exists",
        "/data/attributes/key",
    )
}
DEFAULTS = (
    ("development", "Development", "#2e7d32"),
    ("staging", "Staging", "#f9a825"),
    ("production", "Production", "#c62828"),
)

Key = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL)]
# #rgb, #rrggbb or #rrggbbaa: the SDK's dialect sends all three, and what one
# dialect stored the other must take back.
Color = Annotated[
    str, StringConstraints(pattern=r"^#([0-9a-fA-F]{3}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})$")
]
Position = Annotated[int, Field(ge=0, le=MAX_POSITION)]


class EnvironmentCreate(Strict):
    key: Key
    name: Name
    color: Color | None = None
    position: Position = 0


class EnvironmentUpdate(Strict):
    name: Name | None = None
    color: Color | None = None
    position: Position | None = None


class EnvironmentView(Described):
    key: str
    name: str
    color: str | None
    position: int
    created_at: datetime
    updated_at: datetime


ATTRIBUTES = attribute_names(EnvironmentView)
EnvironmentResource = resource_object("Environment", TYPE, EnvironmentView)
EnvironmentDocument = single_document(EnvironmentResource)
EnvironmentList = list_document(EnvironmentResource)


def environment_resource(row: Any) -> dict[str, Any]:
    return resource(TYPE, row, ATTRIBUTES)


async def create_defaults(connection: AsyncConnection, account_id: uuid.UUID) -> list[Any]:
    statement = (
        insert(environments)
        .values(
            [
                {
                    "account_id": account_id,
                    "key": key,
                    "name": name,
                    "color": color,
                    "position": position,
                }
                for position, (key, name, color) in enumerate(DEFAULTS)
            ]
        )
        .returning(environments)
    )
    return list((await connection.execute(statement)).mappings().all())


@router.get(
    "", response_class=JsonApiResponse, response_model=EnvironmentList, summary="List environments"
)
async def list_environments(
    request: Request, page: PositionedPageQuery, caller: Viewer, connection: Database
) -> Response:
    found = await rows(
        connection,
        paged(
            select(environments).where(environments.c.account_id == caller.account_id),
            environments,
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
async def get_environment(
    environment_id: uuid.UUID, caller: Viewer, connection: Database
) -> JsonApiResponse:
    return respond(
        single(
            environment_resource(
                await one_in_account(connection, environments, caller.account_id, environment_id)
            )
        )
    )


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
    statement = (
        insert(environments)
        .values(account_id=caller.account_id, **body.data.attributes.model_dump())
        .returning(environments)
    )
    try:
        row = (await connection.execute(statement)).mappings().one()
    except IntegrityError as error:
        raise conflict_from(error, CONFLICTS) from None
    await quotas.hold(connection, caller.account_id, Kind.ENVIRONMENTS)
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
    current = await one_in_account(connection, environments, caller.account_id, environment_id)
    if not changes:
        return respond(single(environment_resource(current)))
    statement = (
        update(environments)
        .where(environments.c.id == environment_id)
        .values(**changes, updated_at=func.now())
        .returning(environments)
    )
    return respond(
        single(environment_resource((await connection.execute(statement)).mappings().one()))
    )


@router.delete(
    "/{environment_id}",
    status_code=204,
    summary="Delete an environment no config overrides and no flag targets (ADMIN)",
)
async def delete_environment(
    environment_id: uuid.UUID, caller: Admin, connection: Database
) -> Response:
    current = await one_in_account(
        connection, environments, caller.account_id, environment_id, lock=True
    )
    in_use = await connection.scalar(
        select(func.count()).where(
            configs.c.account_id == caller.account_id,
            configs.c.environments.has_key(current["key"]),
        )
    )
    if in_use:
        raise Conflict(
            f"{in_use} config(s) have overrides for the environment {current['key']!r}; remove them first",
        )
    if targeted := await flag_store.targeting(connection, caller.account_id, current["key"]):
        raise Conflict(
            f"{targeted} flag(s) have settings for the environment {current['key']!r}; remove them first",
        )
    await connection.execute(delete(environments).where(environments.c.id == environment_id))
    return Response(status_code=204)
