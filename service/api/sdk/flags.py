"""Flags in the smplkit SDK's dialect (docs/sdk.md), as `smplkit/flags/`
calls them on the `flags.` host: type `flag`, the key as the id, pages
numbered from 1 with `meta.pagination`, PUT replacing the whole flag;
discovery (`POST /flags/bulk`) and the sources it records.

The rules and the rows are the core's (service/flags/); this module parses,
authorises, calls it and shapes the documents.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import Query, Request, Response
from pydantic import Field, StringConstraints, TypeAdapter, ValidationError, WithJsonSchema
from starlette.convertors import StringConvertor, register_url_convertor

from service.api.dependencies import Database, Member, Viewer, reader_of, reads_by_key
from service.api.errors import JsonApiResponse
from service.api.flag_bodies import RESERVED_KEY, FlagAttributes, Key, TypeName
from service.api.jsonapi import JsonApiBody, QueryBool, Strict, respond, timestamp
from service.api.limits import NO_NUL, JsonValue, Text
from service.api.routers import SDK_PATH, dialect_router
from service.api.sdk import schemas
from service.api.sdk.pages import (
    MAX_PAGE_SIZE,
    PageNumber,
    PageSize,
    key_of,
    numbered,
    page_of,
    pagination,
)
from service.flags import store
from service.flags.definitions import FlagType

router = dialect_router(SDK_PATH, tags=["flags (smplkit SDK)"])


class _FlagKeyConvertor(StringConvertor):
    """A path segment that is not the reserved "bulk": /flags/bulk is the
    discovery endpoint alone, for every method (its Allow header says POST)."""

    regex = f"(?!{RESERVED_KEY}$)[^/]+"


register_url_convertor("flag_key", _FlagKeyConvertor())
KEY_PATH = "/flags/{key:flag_key}"
TYPE = "flag"
# The SDK sends batches of 50 (more only from an explicit flush of a long backlog).
MAX_DISCOVERED = 1000
# (allOf: pydantic resolves a bare $ref it did not make and fails.)
JSON_OBJECT = "#/components/schemas/JsonObject"
Origin = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL)]
Total = Annotated[QueryBool, Query(alias="meta[total]")]


class FlagData(Strict):
    # Any other type is refused with 409, as JSON:API asks.
    type: Annotated[Text, WithJsonSchema({"type": "string", "enum": [TYPE]})]
    id: Key | None = None
    attributes: FlagAttributes


class NewFlagData(FlagData):
    # A flag's id is its key, chosen by the client.
    id: Key


class FlagBody(Strict):
    data: FlagData


class NewFlagBody(Strict):
    data: NewFlagData


def sdk_resource(row: Mapping[Any, Any]) -> dict[str, Any]:
    attributes = store.attributes(row)
    attributes["created_at"] = timestamp(attributes["created_at"])
    attributes["updated_at"] = timestamp(attributes["updated_at"])
    return {"type": TYPE, "id": row["key"], "attributes": attributes}


@router.get(
    "/flags",
    response_class=JsonApiResponse,
    response_model=schemas.SdkFlagList,
    summary="List flags, pages numbered from 1",
)
@reads_by_key
async def list_flags(
    request: Request,
    sort: Annotated[store.Sort, Query()] = "key",
    page_number: PageNumber = 1,
    page_size: PageSize = MAX_PAGE_SIZE,
    total: Total = False,
    flag_type: Annotated[TypeName | None, Query(alias="filter[type]")] = None,
    managed: Annotated[QueryBool | None, Query(alias="filter[managed]")] = None,
    search: Annotated[
        str | None, Query(alias="filter[search]", max_length=200, pattern=NO_NUL)
    ] = None,
) -> JsonApiResponse:
    reader = reader_of(request)
    where = store.conditions(store.Filters(flag_type, managed, search))
    found = await store.LISTS.page(
        reader.connection, reader, where, sort, page_number, page_size, total=total
    )
    meta = {"pagination": numbered(page_number, page_size, found.total)}
    return respond({"data": [sdk_resource(row) for row in found.rows], "meta": meta})


@router.post(
    "/flags",
    status_code=201,
    response_class=JsonApiResponse,
    response_model=schemas.SdkFlagDocument,
    summary="Create a flag (MEMBER)",
)
async def create_flag(
    body: Annotated[NewFlagBody, JsonApiBody], caller: Member, connection: Database
) -> JsonApiResponse:
    key = key_of(TYPE, body.data.type, body.data.id, None)
    row = await store.create(connection, caller.account_id, key, body.data.attributes.write())
    return respond({"data": sdk_resource(row)}, 201, {"Location": f"/api/v1/flags/{key}"})


class DeclaredFlag(Strict):
    id: Key
    type: TypeName
    default: JsonValue
    service: Origin | None = None
    environment: Origin | None = None


class FlagDeclarations(Strict):
    flags: Annotated[
        list[Annotated[dict[str, Any], WithJsonSchema({"allOf": [{"$ref": JSON_OBJECT}]})]],
        Field(max_length=MAX_DISCOVERED),
    ]


_DECLARED = TypeAdapter(DeclaredFlag)


@router.post(
    "/flags/bulk",
    response_class=JsonApiResponse,
    response_model=schemas.DiscoveryResult,
    summary="Register the flags an SDK's code declares; existing flags are never changed (MEMBER)",
)
async def discover_flags(
    body: Annotated[FlagDeclarations, JsonApiBody], caller: Member, connection: Database
) -> JsonApiResponse:
    declared: list[store.Declaration] = []
    skipped: list[dict[str, Any]] = []
    for index, entry in enumerate(body.flags):
        try:
            parsed = _DECLARED.validate_python(entry)
        except ValidationError as error:
            skipped.append({"index": index, "detail": _first_problem(error)})
            continue
        declaration = store.Declaration(
            parsed.id,
            FlagType(parsed.type),
            parsed.default,
            parsed.service or "unknown",
            parsed.environment or "unknown",
        )
        if problem := declaration.problem():
            skipped.append({"index": index, "detail": problem})
        else:
            declared.append(declaration)
    registered = await store.discover(connection, caller.account_id, declared)
    return respond({"registered": registered, "skipped": skipped})


def _first_problem(error: ValidationError) -> str:
    problem = error.errors()[0]
    where = "/".join(str(part) for part in problem["loc"])
    return f"{where}: {problem['msg']}" if where else str(problem["msg"])


@router.get(
    KEY_PATH,
    response_class=JsonApiResponse,
    response_model=schemas.SdkFlagDocument,
    summary="Get a flag by its key",
)
@reads_by_key
async def get_flag(key: Key, request: Request) -> JsonApiResponse:
    reader = reader_of(request)
    return respond({"data": sdk_resource(await store.read_by_key(reader.connection, reader, key))})


@router.put(
    KEY_PATH,
    response_class=JsonApiResponse,
    response_model=schemas.SdkFlagDocument,
    summary="Replace a flag: every writable field as sent; its type never changes (MEMBER)",
)
async def replace_flag(
    key: Key, body: Annotated[FlagBody, JsonApiBody], caller: Member, connection: Database
) -> JsonApiResponse:
    key_of(TYPE, body.data.type, body.data.id, key)
    row = await store.replace(connection, caller.account_id, key, body.data.attributes.write())
    return respond({"data": sdk_resource(row)})


@router.delete(KEY_PATH, status_code=204, summary="Delete a flag (MEMBER)")
async def delete_flag(key: Key, caller: Member, connection: Database) -> Response:
    await store.remove(connection, caller.account_id, key)
    return Response(status_code=204)


def source_resource(row: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        "type": "flag_source",
        "id": str(row["id"]),
        "attributes": {
            "flag": row["flag_key"],
            "service": row["service"],
            "environment": row["environment"],
            "declared_type": row["declared_type"],
            "declared_default": row["declared_default"],
            "first_observed": timestamp(row["first_observed"]),
            "last_seen": timestamp(row["last_seen"]),
            "created_at": timestamp(row["first_observed"]),
            "updated_at": timestamp(row["last_seen"]),
        },
    }


async def _sources(
    connection: Database, query: Any, number: int, size: int, total: bool
) -> JsonApiResponse:
    found = await page_of(connection, query, number, size)
    meta = {"pagination": await pagination(connection, query, number, size, total)}
    return respond({"data": [source_resource(row) for row in found], "meta": meta})


SourceSort = Annotated[store.SourceSort, Query()]


@router.get(
    KEY_PATH + "/sources",
    response_class=JsonApiResponse,
    response_model=schemas.SdkFlagSourceList,
    summary="The services and environments whose SDKs declared a flag",
)
async def list_flag_sources(
    key: Key,
    caller: Viewer,
    connection: Database,
    sort: SourceSort = "-last_seen",
    page_number: PageNumber = 1,
    page_size: PageSize = MAX_PAGE_SIZE,
    total: Total = False,
) -> JsonApiResponse:
    await store.get(connection, caller.account_id, key)
    query = store.sources_of(caller.account_id, key, sort)
    return await _sources(connection, query, page_number, page_size, total)


@router.get(
    "/flag_sources",
    response_class=JsonApiResponse,
    response_model=schemas.SdkFlagSourceList,
    summary="The sources of every flag of the account",
)
async def list_all_flag_sources(
    caller: Viewer,
    connection: Database,
    sort: SourceSort = "-last_seen",
    page_number: PageNumber = 1,
    page_size: PageSize = MAX_PAGE_SIZE,
    total: Total = False,
    service: Annotated[Origin | None, Query(alias="filter[service]")] = None,
    environment: Annotated[Origin | None, Query(alias="filter[environment]")] = None,
) -> JsonApiResponse:
    query = store.sources_of(caller.account_id, None, sort)
    if service is not None:
        query = query.where(store.sources.c.service == service)
    if environment is not None:
        query = query.where(store.sources.c.environment == environment)
    return await _sources(connection, query, page_number, page_size, total)
