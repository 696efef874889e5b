"""Configs in the smplkit SDK's dialect (docs/sdk.md).

The same rows, transactions, keys and roles as /v1/configs, shaped as the
SDK's generated models read them: type `config`, the key as the id, the
parent as its key, items typed `{value, type, description}`, pages numbered
from 1 with `meta.pagination`, PUT replacing the whole resource.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import Field, StrictBool, StringConstraints, WithJsonSchema
from sqlalchemy import RowMapping, Select, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.convertors import StringConvertor, register_url_convertor

from service.api.answer_budget import list_answer
from service.api.config_chains import check_chain_types, types_along
from service.api.config_events import CHANGED, DELETED, announce
from service.api.configs import (
    CONFLICTS,
    RESERVED_KEY,
    Description,
    Key,
    Name,
    check_environments,
    lock_tree,
    refuse_cycle,
)
from service.api.dependencies import Database, Member, Viewer
from service.api.errors import JsonApiResponse, NotFound, UnprocessableContent
from service.api.item_types import (
    ItemType,
    definitions_of,
    refuse_mismatches,
    refuse_nonconforming_overrides,
    refuse_type_changes,
    stored_types,
    typed_items,
)
from service.api.json_body import JsonApiRoute
from service.api.jsonapi import JsonApiBody, QueryBool, Strict, respond, timestamp
from service.api.limits import (
    MAX_CHAIN_DEPTH,
    MAX_CONFIG_JSON_BYTES,
    NAMES_WITHOUT_NUL,
    NO_NUL,
    ConfigOverrides,
    JsonValue,
    Text,
    bounded_json,
    encoded_size,
)
from service.api.quotas import Quotas
from service.api.sdk import schemas
from service.api.sdk.pages import MAX_PAGE_NUMBER, MAX_PAGE_SIZE, key_of, page_of, pagination
from service.models import Config, table
from service.quotas import Kind
from service.state import state_of
from service.storage import conflict_from

router = APIRouter(prefix="/configs", tags=["configs (smplkit SDK)"], route_class=JsonApiRoute)
configs = table(Config)
parents = configs.alias("parent")
TYPE = "config"
SDK_CONFLICTS = {
    **CONFLICTS,
    "configs_account_id_key_key": ("a config with this key already exists", "/data/id"),
}
ITEMS_AT = "/data/attributes/items"
OVERRIDES_AT = "/data/attributes/environments"


class _ConfigKeyConvertor(StringConvertor):
    """A path segment that is not the reserved "bulk": /configs/bulk is the
    discovery endpoint alone, for every method (its Allow header says POST)."""

    regex = f"(?!{RESERVED_KEY}$)[^/]+"


register_url_convertor("config_key", _ConfigKeyConvertor())
KEY_PATH = "/{key:config_key}"

ItemDescription = Annotated[str, StringConstraints(max_length=1000, pattern=NO_NUL)]
Sort = Literal[
    "key", "-key", "name", "-name", "created_at", "-created_at", "updated_at", "-updated_at"
]


class ItemDefinition(Strict):
    value: JsonValue = None
    type: ItemType
    description: ItemDescription | None = None


def _typed_item_schema(item_type: ItemType, value: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "value": {"anyOf": [value, {"type": "null"}]},
            "type": {"type": "string", "enum": [item_type.value]},
            "description": {
                "anyOf": [
                    {"type": "string", "maxLength": 1000, "pattern": NO_NUL},
                    {"type": "null"},
                ]
            },
        },
        "required": ["type"],
        "additionalProperties": False,
    }


# In a config's body a value matches its type (null matches every type), as the
# document says: one schema per type. (Discovery adapts mismatches instead.)
TypedItemInput = Annotated[
    ItemDefinition,
    WithJsonSchema(
        {
            "oneOf": [
                _typed_item_schema(ItemType.STRING, {"type": "string", "pattern": NO_NUL}),
                _typed_item_schema(ItemType.NUMBER, {"type": "number"}),
                _typed_item_schema(ItemType.BOOLEAN, {"type": "boolean"}),
                _typed_item_schema(
                    ItemType.JSON, {"allOf": [{"$ref": "#/components/schemas/JsonValue"}]}
                ),
            ]
        }
    ),
]


def oversized_items(items: Mapping[str, ItemDefinition]) -> str | None:
    """What is over the limits in a config's items, if anything: their values
    (as /v1's items) and, apart, their descriptions, each at most
    MAX_CONFIG_JSON_BYTES of JSON."""
    try:
        bounded_json(MAX_CONFIG_JSON_BYTES)({key: item.value for key, item in items.items()})
    except ValueError as error:
        return f"the items' values {error}"
    described = {key: item.description for key, item in items.items() if item.description}
    if (size := encoded_size(described)) > MAX_CONFIG_JSON_BYTES:
        return (
            f"the items' descriptions are {size} bytes of JSON; at most "
            f"{MAX_CONFIG_JSON_BYTES} are stored"
        )
    return None


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


def with_parent_key(account_id: uuid.UUID) -> Select[Any]:
    return (
        select(configs, parents.c.key.label("parent_key"))
        .select_from(configs.outerjoin(parents, parents.c.id == configs.c.parent_id))
        .where(configs.c.account_id == account_id)
    )


async def by_key(
    connection: AsyncConnection, account_id: uuid.UUID, key: str, *, lock: bool = False
) -> RowMapping:
    query = with_parent_key(account_id).where(configs.c.key == key)
    if lock:
        query = query.with_for_update(of=configs)
    row: RowMapping | None = (await connection.execute(query)).mappings().first()
    if row is None:
        raise NotFound(f"no config with key {key!r}")
    return row


# Keys and names in byte order ("C"), whatever the database's collation: the
# same order on every server, and the order clients sort strings in.
_SORTS = {
    "key": configs.c.key.collate("C"),
    "name": configs.c.name.collate("C"),
    "created_at": configs.c.created_at,
    "updated_at": configs.c.updated_at,
}


@router.get(
    "",
    response_class=JsonApiResponse,
    response_model=schemas.SdkConfigList,
    summary="List configs, pages numbered from 1",
)
async def list_configs(
    request: Request,
    caller: Viewer,
    connection: Database,
    sort: Annotated[Sort, Query()] = "key",
    page_number: Annotated[int, Query(alias="page[number]", ge=1, le=MAX_PAGE_NUMBER)] = 1,
    page_size: Annotated[int, Query(alias="page[size]", ge=1, le=MAX_PAGE_SIZE)] = MAX_PAGE_SIZE,
    total: Annotated[QueryBool, Query(alias="meta[total]")] = False,
    parent: Annotated[Key | None, Query(alias="filter[parent]")] = None,
    search: Annotated[
        str | None, Query(alias="filter[search]", max_length=200, pattern=NO_NUL)
    ] = None,
    managed: Annotated[QueryBool | None, Query(alias="filter[managed]")] = None,
) -> Response:
    query = with_parent_key(caller.account_id)
    if parent is not None:
        query = query.where(parents.c.key == parent)
    if search is not None:
        wanted = search.lower()
        query = query.where(
            or_(
                func.strpos(func.lower(configs.c.key), wanted) > 0,
                func.strpos(func.lower(configs.c.name), wanted) > 0,
            )
        )
    if managed is not None:
        query = query.where(configs.c.managed == managed)
    column = _SORTS[sort.removeprefix("-")]
    # The key (unique in an account) breaks ties: a total, stable order for offsets.
    order = (column.desc(), _SORTS["key"]) if sort.startswith("-") else (column, _SORTS["key"])
    answers = state_of(request)["answers"]
    answers.refuse_when_spent()
    found = await page_of(connection, query.order_by(*order), page_number, page_size)
    meta = {"pagination": await pagination(connection, query, page_number, page_size, total)}
    return list_answer(answers, [sdk_resource(row) for row in found], meta)


@router.get(
    KEY_PATH,
    response_class=JsonApiResponse,
    response_model=schemas.SdkConfigDocument,
    summary="Get a config by its key",
)
async def get_config(key: Key, caller: Viewer, connection: Database) -> JsonApiResponse:
    return respond({"data": sdk_resource(await by_key(connection, caller.account_id, key))})


class _Written:
    """What a create or a replace stores, once checked against the chain."""

    def __init__(self, attributes: ConfigBodyAttributes):
        declared = attributes.items or {}
        self.values = {key: item.value for key, item in declared.items()}
        self.types = {key: item.type for key, item in declared.items()}
        self.definitions = definitions_of(
            self.types, {key: item.description for key, item in declared.items()}
        )
        self.overrides = attributes.environments or {}
        refuse_mismatches(self.types, self.values, ITEMS_AT)
        if problem := oversized_items(declared):
            raise UnprocessableContent(problem, pointer=ITEMS_AT)

    def check_overrides(self, chain: Sequence[RowMapping]) -> None:
        """The overrides name items of the config or its ancestors, with values of their types."""
        chain_types = {**types_along(chain), **self.types}
        refuse_nonconforming_overrides(self.overrides, chain_types, OVERRIDES_AT)


async def _parent_id(
    connection: AsyncConnection, account_id: uuid.UUID, parent_key: str | None
) -> uuid.UUID | None:
    if parent_key is None:
        return None
    parent_id: uuid.UUID | None = await connection.scalar(
        select(configs.c.id).where(configs.c.account_id == account_id, configs.c.key == parent_key)
    )
    if parent_id is None:
        # JSON:API: a request naming a related resource that does not exist is a 404.
        raise NotFound(f"no config with key {parent_key!r}", pointer="/data/attributes/parent")
    return parent_id


def _refuse_too_deep(chain: Sequence[Any], subtree_height: int) -> None:
    if (levels := len(chain) + subtree_height) > MAX_CHAIN_DEPTH:
        raise UnprocessableContent(
            f"parent chains are limited to {MAX_CHAIN_DEPTH} levels; this parent would make "
            f"{levels}",
            pointer="/data/attributes/parent",
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
    written = _Written(attributes)
    await check_environments(connection, caller.account_id, written.overrides)
    await lock_tree(connection, caller.account_id)
    parent_id = await _parent_id(connection, caller.account_id, attributes.parent)
    chain, _ = await check_chain_types(
        connection, caller.account_id, None, parent_id, written.types, ITEMS_AT
    )
    _refuse_too_deep(chain, 1)
    written.check_overrides(chain)
    statement = (
        insert(configs)
        .values(
            account_id=caller.account_id,
            key=key,
            name=attributes.name,
            description=attributes.description,
            parent_id=parent_id,
            items=written.values,
            item_definitions=written.definitions,
            environments=written.overrides,
            managed=True if attributes.managed is None else attributes.managed,
        )
        .returning(configs)
    )
    try:
        row = (await connection.execute(statement)).mappings().one()
    except IntegrityError as error:
        raise conflict_from(error, SDK_CONFLICTS) from None
    await quotas.hold(connection, caller.account_id, Kind.CONFIGS)
    await announce(connection, caller.account_id, CHANGED, key)
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
    written = _Written(attributes)
    await check_environments(connection, caller.account_id, written.overrides)
    await lock_tree(connection, caller.account_id)
    current = await by_key(connection, caller.account_id, key, lock=True)
    parent_id = await _parent_id(connection, caller.account_id, attributes.parent)
    refuse_type_changes(
        written.types, stored_types(current["items"], current["item_definitions"]), ITEMS_AT
    )
    if parent_id is not None:
        await refuse_cycle(
            connection, caller.account_id, current["id"], parent_id, "/data/attributes/parent"
        )
    chain, subtree = await check_chain_types(
        connection, caller.account_id, current["id"], parent_id, written.types, ITEMS_AT
    )
    _refuse_too_deep(chain, 1 + max((level["depth"] for level in subtree), default=0))
    written.check_overrides(chain)
    changes: dict[str, Any] = {
        "name": attributes.name,
        "description": attributes.description,
        "parent_id": parent_id,
        "items": written.values,
        "item_definitions": written.definitions,
        "environments": written.overrides,
    }
    if attributes.managed is not None:
        changes["managed"] = attributes.managed
    statement = (
        update(configs)
        .where(configs.c.id == current["id"])
        .values(**changes, updated_at=func.now())
        .returning(configs)
    )
    row = (await connection.execute(statement)).mappings().one()
    await announce(connection, caller.account_id, CHANGED, key)
    return respond({"data": sdk_resource({**row, "parent_key": attributes.parent})})


@router.delete(
    KEY_PATH, status_code=204, summary="Delete a config that is no other config's parent (MEMBER)"
)
async def delete_config(key: Key, caller: Member, connection: Database) -> Response:
    current = await by_key(connection, caller.account_id, key)
    try:
        await connection.execute(delete(configs).where(configs.c.id == current["id"]))
    except IntegrityError as error:
        raise conflict_from(error, SDK_CONFLICTS) from None
    await announce(connection, caller.account_id, DELETED, key)
    return Response(status_code=204)
