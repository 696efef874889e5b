"""Configuration documents of the caller's account."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import AfterValidator, Field, StringConstraints, WithJsonSchema
from sqlalchemy import RowMapping, delete, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from service.api.config_chains import check_chain_types, types_along
from service.api.config_events import CHANGED, DELETED, announce
from service.api.config_resolution import resolve
from service.api.dependencies import Database, Member, Viewer
from service.api.errors import (
    JSONAPI_MEDIA_TYPE,
    BadRequest,
    Conflict,
    JsonApiResponse,
    NotFound,
    UnprocessableContent,
    json_pointer,
)
from service.api.item_types import (
    inferred_definitions,
    refuse_mistyped_overrides,
    stored_types,
    types_of,
)
from service.api.json_body import JsonApiRoute, parse_json, problems
from service.api.jsonapi import (
    Document,
    JsonApiBody,
    Page,
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
from service.api.limits import (
    MAX_CHAIN_DEPTH,
    MAX_RESOLVED_BYTES,
    NO_NUL,
    ConfigItems,
    ConfigOverrides,
)
from service.api.quotas import Quotas
from service.api.schemas import (
    Described,
    StoredObject,
    attribute_names,
    list_document,
    resource_object,
    single_document,
    to_one,
)
from service.db.driver import DriverStatement
from service.models import Config, Environment, table
from service.quotas import Kind
from service.storage import conflict_from, one_in_account

router = APIRouter(prefix="/configs", tags=["configs"], route_class=JsonApiRoute)
configs = table(Config)
environments = table(Environment)
TYPE = "configs"
ITEMS_AT = "/data/attributes/items"
OVERRIDES_AT = "/data/attributes/environments"
CONFLICTS = {
    "configs_account_id_key_key": ("a config with this key already exists", "/data/attributes/key"),
    "configs_parent_id_fkey": (
        "the config is the parent of other configs; change or delete them first",
        "/data",
    ),
}

KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
# POST /api/v1/configs/bulk registers discovered configs, so "bulk" names no
# config: GET /api/v1/configs/bulk could not reach it (docs/sdk.md).
RESERVED_KEY = "bulk"


def _not_reserved(key: str) -> str:
    if key == RESERVED_KEY:
        raise ValueError(
            f"'{RESERVED_KEY}' is reserved (POST /api/v1/configs/{RESERVED_KEY}); choose another key"
        )
    return key


Key = Annotated[
    str,
    StringConstraints(pattern=KEY_PATTERN),
    AfterValidator(_not_reserved),
    WithJsonSchema({"type": "string", "pattern": KEY_PATTERN, "not": {"const": RESERVED_KEY}}),
]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL)]
Description = Annotated[str, StringConstraints(max_length=10_000, pattern=NO_NUL)]

# The config and its ancestors, the root first, at most $3 of them: $1 the
# config's id, $2 its account. On the hot path of a resolve, so straight on the
# driver (service/db/driver.py), as are the two statements below.
_ANCESTORS = DriverStatement(
    """
    WITH RECURSIVE chain AS (
        SELECT id, parent_id, items, environments, 1 AS level FROM configs
         WHERE id = $1 AND account_id = $2
        UNION ALL
        SELECT c.id, c.parent_id, c.items, c.environments, chain.level + 1
          FROM configs AS c JOIN chain ON c.id = chain.parent_id
         WHERE chain.level < $3
    )
    SELECT id, parent_id, items, environments, level FROM chain ORDER BY level DESC
    """
)
_COLUMNS = ", ".join(column.name for column in configs.c)
_CONFIG_BY_ID = DriverStatement(f"SELECT {_COLUMNS} FROM configs WHERE id = $1 AND account_id = $2")
_KNOWN_ENVIRONMENT = DriverStatement(
    "SELECT count(*) FROM environments WHERE account_id = $1 AND key = $2"
)
# Levels of the config's subtree (1: no children), searched no deeper than :limit.
_SUBTREE_HEIGHT = text(
    """
    WITH RECURSIVE tree AS (
        SELECT id, 1 AS level FROM configs WHERE id = :id
        UNION ALL
        SELECT c.id, tree.level + 1
          FROM configs AS c JOIN tree ON c.parent_id = tree.id
         WHERE tree.level < :limit
    )
    SELECT max(level) FROM tree
    """
)


# A config's insert, on the driver as well (the JSON values as JSON text).
_INSERT = DriverStatement(
    "INSERT INTO configs (account_id, parent_id, key, name, description, items, environments,"
    " item_definitions) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8::jsonb)"
    f" RETURNING {_COLUMNS}"
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


def page_statement(
    *, by_key: bool, by_items: bool, after: bool, descending: bool
) -> DriverStatement:
    """The statement of a page of configs, one per shape of the request, run on
    the driver (a page of 50 is the heaviest read): $1 the account, then the
    key, the items (JSON text, `@>`: answered by the GIN index
    configs_items_idx), the cursor's created_at and id, and last the size."""
    shape = (by_key, by_items, after, descending)
    statement = _PAGE_STATEMENTS.get(shape)
    if statement is None:
        conditions, number = ["account_id = $1"], 1
        if by_key:
            number += 1
            conditions.append(f"key = ${number}")
        if by_items:
            number += 1
            conditions.append(f"items @> ${number}::jsonb")
        order = " DESC" if descending else ""
        if after:
            number += 2
            conditions.append(
                f"(created_at, id) {'<' if descending else '>'} (${number - 1}, ${number})"
            )
        statement = _PAGE_STATEMENTS[shape] = DriverStatement(
            f"SELECT {_COLUMNS} FROM configs WHERE {' AND '.join(conditions)}"
            f" ORDER BY created_at{order}, id{order} LIMIT ${number + 1}"
        )
    return statement


_PAGE_STATEMENTS: dict[tuple[bool, ...], DriverStatement] = {}


async def page_of_configs(
    connection: AsyncConnection,
    account_id: uuid.UUID,
    page: Page,
    key: str | None = None,
    items: dict[str, Any] | None = None,
) -> list[Any]:
    statement = page_statement(
        by_key=key is not None,
        by_items=items is not None,
        after=page.after is not None,
        descending=page.descending,
    )
    arguments: list[Any] = [account_id]
    if key is not None:
        arguments.append(key)
    if items is not None:
        arguments.append(encode(items).decode())
    if page.after is not None:
        arguments += page.after
    return await statement.fetch(connection, *arguments, page.size)


@router.get(
    "",
    response_class=JsonApiResponse,
    response_model=ConfigList,
    openapi_extra={"parameters": [ITEMS_FILTER]},
    summary="List configs (filter[key], filter[items]=<JSON object>)",
)
async def list_configs(
    request: Request,
    page: PageQuery,
    caller: Viewer,
    connection: Database,
    key: Annotated[str | None, Query(alias="filter[key]", pattern=NO_NUL)] = None,
    items: Annotated[
        str | None,
        # JSON text: described by ITEMS_FILTER in the route's `openapi_extra`,
        # as FastAPI's query parameters cannot say it.
        Query(alias="filter[items]", include_in_schema=False),
    ] = None,
) -> Response:
    found = await page_of_configs(
        connection,
        caller.account_id,
        page,
        key=key,
        items=items_filter(items) if items is not None else None,
    )
    return listing(request, page, found, config_resource)


@router.get(
    "/{config_id}",
    response_class=JsonApiResponse,
    response_model=ConfigDocument,
    summary="Get a config",
)
async def get_config(config_id: uuid.UUID, caller: Viewer, connection: Database) -> JsonApiResponse:
    row = await _CONFIG_BY_ID.fetchrow(connection, config_id, caller.account_id)
    if row is None:
        raise NotFound(f"no config with id {config_id}")
    return respond(single(config_resource(row)))


@router.get(
    "/{config_id}/resolved",
    response_class=JsonApiResponse,
    response_model=ResolvedDocument,
    summary="The config's items for an environment, merged with its parents' (child wins)",
)
async def resolved_config(
    config_id: uuid.UUID,
    caller: Viewer,
    connection: Database,
    environment: Annotated[str, Query(min_length=1, max_length=64, pattern=NO_NUL)],
) -> Response:
    chain = await _chain(connection, caller.account_id, config_id)
    if not chain:
        raise NotFound(f"no config with id {config_id}")
    if chain[0]["parent_id"] is not None:
        raise Conflict(
            f"the config's parent chain is longer than {MAX_CHAIN_DEPTH} levels (it was built "
            "before that limit); re-parent one of its ancestors",
        )
    known = await _KNOWN_ENVIRONMENT.fetchval(connection, caller.account_id, environment)
    if not known:
        # The view asked for does not exist (as for an unknown config): 404, not
        # 400, since the parameter itself is well formed.
        raise NotFound(f"no environment with key {environment!r}", parameter="environment")
    body = encode(
        single(
            {
                "type": "resolved-configs",
                "id": str(config_id),
                "attributes": {"environment": environment, "items": resolve(chain, environment)},
                "relationships": {"config": {"data": {"type": TYPE, "id": str(config_id)}}},
            },
            meta={"chain": [str(row["id"]) for row in chain]},
        )
    )
    if len(body) > MAX_RESOLVED_BYTES:
        raise Conflict(
            f"the resolved config is {len(body)} bytes, over {MAX_RESOLVED_BYTES}: its chain holds "
            "configs stored before their size was limited; make them smaller",
        )
    return Response(body, media_type=JSONAPI_MEDIA_TYPE)


async def _chain(
    connection: AsyncConnection, account_id: uuid.UUID, config_id: uuid.UUID
) -> list[Any]:
    """The config's chain from the root down, one level more than allowed, so a
    chain built before the limit shows (its root then still has a parent)."""
    return await _ANCESTORS.fetch(connection, config_id, account_id, MAX_CHAIN_DEPTH + 1)


@router.post(
    "",
    status_code=201,
    response_class=JsonApiResponse,
    response_model=ConfigDocument,
    summary="Create a config (MEMBER)",
)
async def create_config(
    body: Annotated[Document[ConfigCreate], JsonApiBody],
    caller: Member,
    connection: Database,
    quotas: Quotas,
) -> JsonApiResponse:
    expect_type(body, TYPE)
    values = body.data.attributes
    await check_environments(connection, caller.account_id, values.environments)
    _, parent_id = related_id(body, "parent", TYPE)
    definitions = inferred_definitions(values.items, {}, None)
    own = types_of(definitions)
    chain: Sequence[RowMapping] = []
    if parent_id is not None:
        await lock_tree(connection, caller.account_id)
        await one_in_account(connection, configs, caller.account_id, parent_id)
        await _check_depth(connection, caller.account_id, parent_id, subtree_height=1)
        chain, _ = await check_chain_types(
            connection, caller.account_id, None, parent_id, own, ITEMS_AT
        )
    refuse_mistyped_overrides(values.environments, {**types_along(chain), **own}, OVERRIDES_AT)
    try:
        [row] = await _INSERT.fetch(
            connection,
            caller.account_id,
            parent_id,
            values.key,
            values.name,
            values.description,
            encode(values.items).decode(),
            encode(values.environments).decode(),
            encode(definitions).decode(),
        )
    except IntegrityError as error:
        raise conflict_from(error, CONFLICTS) from None
    await quotas.hold(connection, caller.account_id, Kind.CONFIGS)
    await announce(connection, caller.account_id, CHANGED, row["key"])
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
    if "environments" in changes:
        await check_environments(connection, caller.account_id, changes["environments"])
    given, parent_id = related_id(body, "parent", TYPE)
    # Items, overrides and parents are checked along the chain, which must hold still.
    touches_chain = given or "items" in changes or "environments" in changes
    if touches_chain:
        await lock_tree(connection, caller.account_id)
    current = await one_in_account(connection, configs, caller.account_id, config_id, lock=True)
    if "items" in changes:
        changes["item_definitions"] = inferred_definitions(
            changes["items"], current["items"], current["item_definitions"]
        )
    if touches_chain:
        own = stored_types(
            changes.get("items", current["items"]),
            changes.get("item_definitions", current["item_definitions"]),
        )
        chain, _ = await check_chain_types(
            connection,
            caller.account_id,
            config_id,
            parent_id if given else current["parent_id"],
            own,
            ITEMS_AT,
        )
        refuse_mistyped_overrides(
            changes.get("environments", current["environments"]),
            {**types_along(chain), **own},
            OVERRIDES_AT,
        )
    if given:
        if parent_id is not None:
            await one_in_account(connection, configs, caller.account_id, parent_id)
            await refuse_cycle(connection, caller.account_id, config_id, parent_id)
            height = await connection.scalar(
                _SUBTREE_HEIGHT, {"id": config_id, "limit": MAX_CHAIN_DEPTH + 1}
            )
            await _check_depth(connection, caller.account_id, parent_id, subtree_height=height)
        changes["parent_id"] = parent_id
    if not changes:
        return respond(single(config_resource(current)))
    statement = (
        update(configs)
        .where(configs.c.id == config_id)
        .values(**changes, updated_at=func.now())
        .returning(configs)
    )
    row = (await connection.execute(statement)).mappings().one()
    await announce(connection, caller.account_id, CHANGED, row["key"])
    return respond(single(config_resource(row)))


@router.delete(
    "/{config_id}",
    status_code=204,
    summary="Delete a config that is no other config's parent (MEMBER)",
)
async def delete_config(config_id: uuid.UUID, caller: Member, connection: Database) -> Response:
    current = await one_in_account(connection, configs, caller.account_id, config_id)
    try:
        await connection.execute(delete(configs).where(configs.c.id == config_id))
    except IntegrityError as error:
        raise conflict_from(error, CONFLICTS) from None
    await announce(connection, caller.account_id, DELETED, current["key"])
    return Response(status_code=204)


async def lock_tree(connection: AsyncConnection, account_id: uuid.UUID) -> None:
    """Serialise parent changes per account: two concurrent changes could each
    pass the cycle check and close a cycle together."""
    await connection.execute(
        select(func.pg_advisory_xact_lock(func.hashtextextended(f"configs-tree:{account_id}", 0)))
    )


async def _ancestors(
    connection: AsyncConnection, account_id: uuid.UUID, start: uuid.UUID
) -> list[uuid.UUID]:
    found = await _ANCESTORS.fetch(connection, start, account_id, MAX_CHAIN_DEPTH + 1)
    return [row["id"] for row in found]


async def refuse_cycle(
    connection: AsyncConnection,
    account_id: uuid.UUID,
    config_id: uuid.UUID,
    parent_id: uuid.UUID,
    pointer: str = "/data/relationships/parent",
) -> None:
    if config_id in await _ancestors(connection, account_id, parent_id):
        raise Conflict(
            "that parent would make a cycle: the config is among its ancestors", pointer=pointer
        )


async def _check_depth(
    connection: AsyncConnection, account_id: uuid.UUID, parent_id: uuid.UUID, subtree_height: int
) -> None:
    """The parent's chain, plus the config and everything under it, must fit
    in MAX_CHAIN_DEPTH levels: moving a config moves its whole subtree."""
    levels = len(await _ancestors(connection, account_id, parent_id)) + subtree_height
    if levels > MAX_CHAIN_DEPTH:
        raise UnprocessableContent(
            f"parent chains are limited to {MAX_CHAIN_DEPTH} levels; this parent would make "
            f"{levels}",
            pointer="/data/relationships/parent",
        )


async def check_environments(
    connection: AsyncConnection, account_id: uuid.UUID, overrides: dict[str, Any]
) -> None:
    if not overrides:
        return
    # FOR KEY SHARE: an environment cannot be deleted (which locks it FOR
    # UPDATE, then counts its overrides) between this check and the commit.
    known = set(
        await connection.scalars(
            select(environments.c.key)
            .where(environments.c.account_id == account_id, environments.c.key.in_(list(overrides)))
            .with_for_update(read=True, key_share=True)
        )
    )
    for key in overrides:
        if key not in known:
            # JSON:API: a request naming a related resource that does not exist is a 404.
            raise NotFound(
                f"no environment with key {key!r}",
                pointer="/data/attributes/environments" + json_pointer((key,)),
            )
