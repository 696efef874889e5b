"""Environments in the smplkit SDK's dialect (`client.platform.environments`).

The same rows as /v1/environments, addressed by key, with the SDK's
`classification` and `managed`, colours as #rgb, #rrggbb or #rrggbbaa, and
PUT replacing every writable field. `managed` is stored as sent: the SDK
always sends false (its public model has no such field), and nothing in this
service treats unmanaged environments differently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from fastapi import Query, Response
from pydantic import BeforeValidator, StrictBool, WithJsonSchema

from service.accounts import environments
from service.api.account_shapes import Color, Name
from service.api.account_shapes import EnvironmentKey as Key
from service.api.dependencies import Admin, Database, Viewer
from service.api.errors import JsonApiResponse
from service.api.jsonapi import JsonApiBody, QueryBool, Strict, respond, timestamp
from service.api.limits import NO_NUL, Text
from service.api.quotas import Quotas
from service.api.routers import SDK_PATH, dialect_router
from service.api.sdk import schemas
from service.api.sdk.pages import (
    MAX_PAGE_SIZE,
    PageNumber,
    PageSize,
    key_of,
    page_of,
    pagination,
)
from service.configs.events import MANY_CHANGED, announce

router = dialect_router(SDK_PATH, "/environments", tags=["environments (smplkit SDK)"])
TYPE = "environment"
SDK_CONFLICTS = {
    "environments_account_id_key_key": ("an environment with this key already exists", "/data/id")
}

Classification = Annotated[
    Literal["STANDARD", "AD_HOC"],
    BeforeValidator(lambda value: value.upper() if isinstance(value, str) else value),
]
Sort = Literal[
    "key", "-key", "name", "-name", "created_at", "-created_at", "updated_at", "-updated_at"
]


class EnvironmentBodyAttributes(Strict):
    name: Name
    color: Color | None = None
    classification: Classification = "STANDARD"
    # true or false only (not "yes", 1, "on"), as the document says.
    managed: StrictBool | None = None


class EnvironmentBodyData(Strict):
    # Any other type is refused with 409, as JSON:API asks.
    type: Annotated[Text, WithJsonSchema({"type": "string", "enum": [TYPE]})]
    id: Key | None = None
    attributes: EnvironmentBodyAttributes


class NewEnvironmentData(EnvironmentBodyData):
    # An environment's id is its key, chosen by the client.
    id: Key


class EnvironmentBody(Strict):
    data: EnvironmentBodyData


class NewEnvironmentBody(Strict):
    data: NewEnvironmentData


def sdk_environment(row: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        "type": TYPE,
        "id": row["key"],
        "attributes": {
            "name": row["name"],
            "color": row["color"].lower() if row["color"] else None,
            "classification": row["classification"],
            "managed": row["managed"],
            "created_at": timestamp(row["created_at"]),
            "updated_at": timestamp(row["updated_at"]),
        },
    }


def _written(attributes: EnvironmentBodyAttributes) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": attributes.name,
        "color": attributes.color.lower() if attributes.color else None,
        "classification": attributes.classification,
    }
    if attributes.managed is not None:
        values["managed"] = attributes.managed
    return values


# Keys and names in byte order ("C"), whatever the database's collation: the
# same order on every server, and the order clients sort strings in.
_COLUMNS = environments.environments.c
_SORTS = {
    "key": _COLUMNS.key.collate("C"),
    "name": _COLUMNS.name.collate("C"),
    "created_at": _COLUMNS.created_at,
    "updated_at": _COLUMNS.updated_at,
}


@router.get(
    "",
    response_class=JsonApiResponse,
    response_model=schemas.SdkEnvironmentList,
    summary="List environments, pages numbered from 1",
)
async def list_environments(
    caller: Viewer,
    connection: Database,
    sort: Annotated[Sort, Query()] = "name",
    page_number: PageNumber = 1,
    page_size: PageSize = MAX_PAGE_SIZE,
    total: Annotated[QueryBool, Query(alias="meta[total]")] = False,
    search: Annotated[
        str | None, Query(alias="filter[search]", max_length=200, pattern=NO_NUL)
    ] = None,
    classification: Annotated[Classification | None, Query(alias="filter[classification]")] = None,
    managed: Annotated[QueryBool | None, Query(alias="filter[managed]")] = None,
) -> JsonApiResponse:
    query = environments.of_account(
        caller.account_id, search=search, classification=classification, managed=managed
    )
    column = _SORTS[sort.removeprefix("-")]
    order = (column.desc(), _SORTS["key"]) if sort.startswith("-") else (column, _SORTS["key"])
    found = await page_of(connection, query.order_by(*order), page_number, page_size)
    return respond(
        {
            "data": [sdk_environment(row) for row in found],
            "meta": {
                "pagination": await pagination(connection, query, page_number, page_size, total)
            },
        }
    )


@router.get(
    "/{key}",
    response_class=JsonApiResponse,
    response_model=schemas.SdkEnvironmentDocument,
    summary="Get an environment by its key",
)
async def get_environment(key: Key, caller: Viewer, connection: Database) -> JsonApiResponse:
    return respond(
        {"data": sdk_environment(await environments.by_key(connection, caller.account_id, key))}
    )


@router.post(
    "",
    status_code=201,
    response_class=JsonApiResponse,
    response_model=schemas.SdkEnvironmentDocument,
    summary="Create an environment (ADMIN)",
)
async def create_environment(
    body: Annotated[NewEnvironmentBody, JsonApiBody],
    caller: Admin,
    connection: Database,
    quotas: Quotas,
) -> JsonApiResponse:
    key = key_of(TYPE, body.data.type, body.data.id, None)
    values = {"key": key, **_written(body.data.attributes)}
    row = await environments.create(connection, quotas, caller.account_id, values, SDK_CONFLICTS)
    return respond({"data": sdk_environment(row)}, 201, {"Location": f"/api/v1/environments/{key}"})


@router.put(
    "/{key}",
    response_class=JsonApiResponse,
    response_model=schemas.SdkEnvironmentDocument,
    summary="Replace an environment's name, colour, classification (and managed) (ADMIN)",
)
async def replace_environment(
    key: Key,
    body: Annotated[EnvironmentBody, JsonApiBody],
    caller: Admin,
    connection: Database,
) -> JsonApiResponse:
    key_of(TYPE, body.data.type, body.data.id, key)
    current = await environments.by_key(connection, caller.account_id, key, lock=True)
    row = await environments.change(connection, current["id"], _written(body.data.attributes))
    return respond({"data": sdk_environment(row)})


@router.delete(
    "/{key}",
    status_code=204,
    summary="Delete an environment; cascade=true also removes configs' overrides and flags' settings for it (ADMIN)",
)
async def delete_environment(
    key: Key, caller: Admin, connection: Database, cascade: QueryBool = False
) -> Response:
    current = await environments.by_key(connection, caller.account_id, key, lock=True)
    if cascade:

        async def configs_changed() -> None:
            await announce(connection, caller.account_id, MANY_CHANGED)

        await environments.delete_cascading(connection, caller.account_id, current, configs_changed)
    else:
        await environments.delete_unused(
            connection, caller.account_id, current, ", or delete with cascade=true"
        )
    return Response(status_code=204)
