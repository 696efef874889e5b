"""Configs in the smplkit SDK's dialect (docs/sdk.md).

The same rows, transactions, keys and roles as /v1/configs, shaped as the
SDK's generated models read them: type `config`, the key as the id, the
parent as its key, items typed `{value, type, description}`, pages numbered
from 1 with `meta.pagination`, PUT replacing the whole resource.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import Query, Request, Response
from pydantic import Field, StrictBool, WithJsonSchema
from starlette.convertors import StringConvertor, register_url_convertor

from service.api.answer_budget import list_answer
from service.api.config_bodies import RESERVED_KEY, Description, Key, Name, TypedItemInput
from service.api.dependencies import Database, Member, reader_of, reads_by_key
from service.api.errors import JsonApiResponse
from service.api.jsonapi import JsonApiBody, QueryBool, Strict, respond, timestamp
from service.api.limits import NAMES_WITHOUT_NUL, NO_NUL, ConfigOverrides, Text
from service.api.quotas import Quotas
from service.api.routers import SDK_PATH, dialect_router
from service.api.sdk import schemas
from service.api.sdk.pages import (
    MAX_PAGE_SIZE,
    PageNumber,
    PageSize,
    key_of,
    numbered,
)
from service.configs import store
from service.configs.items import typed_items
from service.configs.store import ConfigWrite, Dialect, Filters, Sort
from service.state import state_of

router = dialect_router(SDK_PATH, "/configs", tags=["configs (smplkit SDK)"])
TYPE = "config"
# Where the SDK's documents hold what the configs core refuses.
SDK = Dialect(
    key_at="/data/id",
    parent_at="/data/attributes/parent",
    declared_overrides_only=True,
    creates_lock_tree=True,
)


class _ConfigKeyConvertor(StringConvertor):
    """A path segment that is not the reserved "bulk": /configs/bulk is the
    discovery endpoint alone, for every method (its Allow header says POST)."""

    regex = f"(?!{RESERVED_KEY}$)[^/]+"


register_url_convertor("config_key", _ConfigKeyConvertor())
KEY_PATH = "/{key:config_key}"


class ConfigBodyAttributes(Strict):
    name: Name
    description: Description | None = None
    parent: Key | None = None
    items: dict[str, TypedItemInput] | None = Field(
        default=None, json_schema_extra=NAMES_WITHOUT_NUL
    )
    environments: ConfigOverrides | None = None
    # Absent (as in every body the SDK sends) leaves it unchanged.
    # true or false only (not "yes", 1, "on"), as the document says.
    managed: StrictBool | None = None


class ConfigBodyData(Strict):
    # Any other type is refused with 409, as JSON:API asks.
    type: Annotated[Text, WithJsonSchema({"type": "string", "enum": [TYPE]})]
    id: Key | None = None
    attributes: ConfigBodyAttributes


class NewConfigData(ConfigBodyData):
    # A config's id is its key, chosen by the client.
    id: Key


class ConfigBody(Strict):
    data: ConfigBodyData


class NewConfigBody(Strict):
    data: NewConfigData


def sdk_resource(row: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        "type": TYPE,
        "id": row["key"],
        "attributes": {
            "name": row["name"],
            "description": row["description"],
            "parent": row["parent_key"],
            "items": typed_items(row["items"], row["item_definitions"]),
            "environments": row["environments"],
            "managed": row["managed"],
            "created_at": timestamp(row["created_at"]),
            "updated_at": timestamp(row["updated_at"]),
        },
    }


@router.get(
    "",
    response_class=JsonApiResponse,
    response_model=schemas.SdkConfigList,
    summary="List configs, pages numbered from 1",
)
@reads_by_key
async def list_configs(
    request: Request,
    sort: Annotated[Sort, Query()] = "key",
    page_number: PageNumber = 1,
    page_size: PageSize = MAX_PAGE_SIZE,
    total: Annotated[QueryBool, Query(alias="meta[total]")] = False,
    parent: Annotated[Key | None, Query(alias="filter[parent]")] = None,
    search: Annotated[
        str | None, Query(alias="filter[search]", max_length=200, pattern=NO_NUL)
    ] = None,
    managed: Annotated[QueryBool | None, Query(alias="filter[managed]")] = None,
) -> Response:
    reader = reader_of(request)
    where = store.conditions(Filters(parent, search, managed))
    found = await store.LISTS.page(
        reader.connection, reader, where, sort, page_number, page_size, total=total
    )
    answers = state_of(request)["answers"]
    # The caller is admitted by the read itself: the budget is looked at after.
    answers.refuse_when_spent()
    meta = {"pagination": numbered(page_number, page_size, found.total)}
    return list_answer(answers, [sdk_resource(row) for row in found.rows], meta)


@router.get(
    KEY_PATH,
    response_class=JsonApiResponse,
    response_model=schemas.SdkConfigDocument,
    summary="Get a config by its key",
)
@reads_by_key
async def get_config(key: Key, request: Request) -> JsonApiResponse:
    reader = reader_of(request)
    return respond({"data": sdk_resource(await store.read_by_key(reader.connection, reader, key))})


def _write(attributes: ConfigBodyAttributes) -> ConfigWrite:
    declared = attributes.items or {}
    return ConfigWrite(
        name=attributes.name,
        description=attributes.description,
        items={key: item.value for key, item in declared.items()},
        overrides=attributes.environments or {},
        types={key: item.type for key, item in declared.items()},
        descriptions={key: item.description for key, item in declared.items()},
        managed=attributes.managed,
    )


@router.post(
    "",
    status_code=201,
    response_class=JsonApiResponse,
    response_model=schemas.SdkConfigDocument,
    summary="Create a config (MEMBER)",
)
async def create_config(
    body: Annotated[NewConfigBody, JsonApiBody],
    caller: Member,
    connection: Database,
    quotas: Quotas,
) -> JsonApiResponse:
    key = key_of(TYPE, body.data.type, body.data.id, None)
    attributes = body.data.attributes
    row = await store.create(
        connection, caller.account_id, key, _write(attributes), attributes.parent, SDK, quotas
    )
    return respond(
        {"data": sdk_resource({**row, "parent_key": attributes.parent})},
        201,
        {"Location": f"/api/v1/configs/{key}"},
    )


@router.put(
    KEY_PATH,
    response_class=JsonApiResponse,
    response_model=schemas.SdkConfigDocument,
    summary="Replace a config: every writable field as sent (MEMBER)",
)
async def replace_config(
    key: Key,
    body: Annotated[ConfigBody, JsonApiBody],
    caller: Member,
    connection: Database,
) -> JsonApiResponse:
    key_of(TYPE, body.data.type, body.data.id, key)
    attributes = body.data.attributes
    row = await store.replace(
        connection, caller.account_id, key, _write(attributes), attributes.parent, SDK
    )
    return respond({"data": sdk_resource({**row, "parent_key": attributes.parent})})


@router.delete(
    KEY_PATH, status_code=204, summary="Delete a config that is no other config's parent (MEMBER)"
)
async def delete_config(key: Key, caller: Member, connection: Database) -> Response:
    current = await store.by_key(connection, caller.account_id, key)
    await store.remove(connection, caller.account_id, current, SDK)
    return Response(status_code=204)
