"""Configuration documents of the caller's account."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import Query, Request, Response
from pydantic import Field, WithJsonSchema

from service.api.config_bodies import Description, Key, Name
from service.api.dependencies import Database, Member, MemberWrite, reader_of, reads_by_key
from service.api.errors import (
    JSONAPI_MEDIA_TYPE,
    BadRequest,
    Conflict,
    JsonApiResponse,
    defer_problem,
)
from service.api.json_body import parse_json, problems
from service.api.jsonapi import (
    Document,
    JsonApiBody,
    PageQuery,
    Strict,
    changed_attributes,
    encode,
    expect_type,
    listing,
    related_id,
    resource,
    respond,
    single,
)
from service.api.limits import MAX_RESOLVED_BYTES, NO_NUL, ConfigItems, ConfigOverrides
from service.api.quotas import Quotas
from service.api.routers import V1_PATH, dialect_router
from service.api.schemas import (
    Described,
    StoredObject,
    attribute_names,
    list_document,
    resource_object,
    single_document,
    to_one,
)
from service.configs import store
from service.configs.store import ConfigWrite, Dialect
from service.db.driver import Row

router = dialect_router(V1_PATH, "/configs", tags=["configs"])
TYPE = "configs"
# Where /v1's documents hold what the configs core refuses.
V1 = Dialect(
    key_at="/data/attributes/key",
    parent_at="/data/relationships/parent",
    declared_overrides_only=False,
)


class ConfigCreate(Strict):
    key: Key
    name: Name
    description: Description | None = None
    items: ConfigItems = Field(default_factory=dict)
    environments: ConfigOverrides = Field(default_factory=dict)


class ConfigUpdate(Strict):
    name: Name | None = None
    description: Description | None = None
    items: ConfigItems | None = None
    environments: ConfigOverrides | None = None


class ConfigView(Described):
    key: str
    name: str
    description: str | None
    items: StoredObject
    environments: Annotated[
        dict[str, dict[str, Any]],
        WithJsonSchema({"type": "object", "additionalProperties": {"type": "object"}}),
    ] = Field(description="Overrides of items by environment key")
    created_at: datetime
    updated_at: datetime


class ResolvedView(Described):
    environment: str
    items: StoredObject = Field(description="The chain's items merged, the config's own winning")


class ResolvedMeta(Described):
    chain: list[uuid.UUID] = Field(description="The configs merged, from the root down")


ATTRIBUTES = attribute_names(ConfigView)
ConfigResource = resource_object("Config", TYPE, ConfigView, {"parent": to_one(TYPE)})
ConfigDocument = single_document(ConfigResource)
ConfigList = list_document(ConfigResource)
ResolvedDocument = single_document(
    resource_object(
        "ResolvedConfig",
        "resolved-configs",
        ResolvedView,
        {"config": to_one(TYPE)},
        links=False,
    ),
    meta=(ResolvedMeta, ...),
)


def config_resource(row: Any) -> dict[str, Any]:
    return resource(TYPE, row, ATTRIBUTES, {"parent": ("configs", row["parent_id"])})


# filter[items] in the OpenAPI document: a parameter whose value is JSON text.
ITEMS_FILTER = {
    "name": "filter[items]",
    "in": "query",
    "required": False,
    "description": "A JSON object the config's items must contain (PostgreSQL's @>)",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JsonObject"}}},
}


def items_filter(raw: str) -> dict[str, Any]:
    """filter[items] is a JSON object the config's items must contain."""
    try:
        wanted = parse_json(raw)
    except (ValueError, RecursionError):
        wanted = None
    if not isinstance(wanted, dict):
        raise BadRequest("filter[items] must be a JSON object", parameter="filter[items]")
    if found := problems(wanted):
        pointer, problem = found[0]
        raise BadRequest(f"filter[items] at {pointer or '/'} {problem}", parameter="filter[items]")
    return wanted


def _items_filter(request: Request, raw: str | None) -> dict[str, Any] | None:
    """filter[items], parsed before the read's one statement checks the
    caller: a problem of it is told only once the caller is admitted."""
    if raw is None:
        return None
    try:
        return items_filter(raw)
    except BadRequest as problem:
        defer_problem(request.scope, problem)
        return None


@router.get(
    "",
    response_class=JsonApiResponse,
    response_model=ConfigList,
    openapi_extra={"parameters": [ITEMS_FILTER]},
    summary="List configs (filter[key], filter[items]=<JSON object>)",
)
@reads_by_key
async def list_configs(
    request: Request,
    page: PageQuery,
    key: Annotated[str | None, Query(alias="filter[key]", pattern=NO_NUL)] = None,
    items: Annotated[
        str | None,
        # JSON text: described by ITEMS_FILTER in the route's `openapi_extra`,
        # as FastAPI's query parameters cannot say it.
        Query(alias="filter[items]", include_in_schema=False),
    ] = None,
) -> Response:
    reader = reader_of(request)
    found = await store.keyset_page(
        reader.connection,
        reader,
        page.size,
        page.after,
        page.descending,
        key=key,
        items=_items_filter(request, items),
    )
    return listing(request, page, found, config_resource)


@router.get(
    "/{config_id}",
    response_class=JsonApiResponse,
    response_model=ConfigDocument,
    summary="Get a config",
)
@reads_by_key
async def get_config(config_id: uuid.UUID, request: Request) -> JsonApiResponse:
    reader = reader_of(request)
    row = await store.by_id(reader.connection, reader, config_id)
    return respond(single(config_resource(row)))


@router.get(
    "/{config_id}/resolved",
    response_class=JsonApiResponse,
    response_model=ResolvedDocument,
    summary="The config's items for an environment, merged with its parents' (child wins)",
)
@reads_by_key
async def resolved_config(
    config_id: uuid.UUID,
    request: Request,
    environment: Annotated[str, Query(min_length=1, max_length=64, pattern=NO_NUL)],
) -> Response:
    reader = reader_of(request)
    found = await store.resolved(reader.connection, reader, config_id, environment)
    body = encode(
        single(
            {
                "type": "resolved-configs",
                "id": str(config_id),
                "attributes": {"environment": environment, "items": found.items},
                "relationships": {"config": {"data": {"type": TYPE, "id": str(config_id)}}},
            },
            meta={"chain": [str(row["id"]) for row in found.chain]},
        )
    )
    if len(body) > MAX_RESOLVED_BYTES:
        raise Conflict(
            f"the resolved config is {len(body)} bytes, over {MAX_RESOLVED_BYTES}: its chain holds "
            "configs stored before their size was limited; make them smaller",
        )
    return Response(body, media_type=JSONAPI_MEDIA_TYPE)


@router.post(
    "",
    status_code=201,
    response_class=JsonApiResponse,
    response_model=ConfigDocument,
    summary="Create a config (MEMBER)",
)
async def create_config(
    body: Annotated[Document[ConfigCreate], JsonApiBody],
    key: MemberWrite,
    quotas: Quotas,
) -> JsonApiResponse:
    async def create() -> Row:
        expect_type(body, TYPE)
        values = body.data.attributes
        _, parent_id = related_id(body, "parent", TYPE)
        write = ConfigWrite(
            name=values.name,
            description=values.description,
            items=values.items,
            overrides=values.environments,
        )
        # The usual create (at the root, no overrides) is one statement.
        if store.creates_alone(parent_id, write, V1):
            return await store.create_alone(key.connection, key, values.key, write, V1, quotas)
        caller, connection = await key.transaction()
        return await store.create(
            connection, caller.account_id, values.key, write, parent_id, V1, quotas
        )

    row = await key.writes(create())
    return respond(single(config_resource(row)), 201, {"Location": f"/v1/configs/{row['id']}"})


@router.patch(
    "/{config_id}",
    response_class=JsonApiResponse,
    response_model=ConfigDocument,
    summary="Update a config; a parent that would make a cycle is refused (MEMBER)",
)
async def update_config(
    config_id: uuid.UUID,
    body: Annotated[Document[ConfigUpdate], JsonApiBody],
    caller: Member,
    connection: Database,
) -> JsonApiResponse:
    expect_type(body, TYPE, config_id)
    changes = changed_attributes(body, not_null=("name", "items", "environments"))
    moved, parent_id = related_id(body, "parent", TYPE)
    row = await store.update(
        connection, caller.account_id, config_id, changes, V1, moved=moved, parent_id=parent_id
    )
    return respond(single(config_resource(row)))


@router.delete(
    "/{config_id}",
    status_code=204,
    summary="Delete a config that is no other config's parent (MEMBER)",
)
async def delete_config(config_id: uuid.UUID, caller: Member, connection: Database) -> Response:
    current = await store.by_id(connection, caller.account_id, config_id)
    await store.remove(connection, caller.account_id, current, V1)
    return Response(status_code=204)
