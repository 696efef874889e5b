"""The account in the smplkit SDK's dialect: the current account, its
settings (`client.account.settings`: a plain JSON object, not JSON:API), and
the contexts SDKs report in use (`POST /api/v1/contexts/bulk`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Body, Request
from fastapi.responses import JSONResponse
from pydantic import Field, StringConstraints
from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert

from service.accounts import accounts
from service.api.dependencies import Admin, Database, Member, Viewer, reader_of, reads_by_key
from service.api.errors import JsonApiResponse, UnprocessableContent
from service.api.jsonapi import JsonApiBody, Strict, respond, timestamp
from service.api.limits import (
    MAX_CONFIG_JSON_BYTES,
    MAX_USER_ATTRIBUTES_BYTES,
    NO_NUL,
    JsonObject,
    bounded_json,
)
from service.api.quotas import Quotas
from service.api.routers import SDK_PATH, dialect_router
from service.api.sdk import schemas
from service.models import Context, table
from service.quotas import Kind

router = dialect_router(SDK_PATH, tags=["account (smplkit SDK)"])
contexts = table(Context)
MAX_CONTEXTS = 1000
ContextType = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=NO_NUL)]
ContextKey = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=NO_NUL)]


@router.get(
    "/accounts/current",
    response_class=JsonApiResponse,
    response_model=schemas.SdkAccountDocument,
    summary="The key's account",
)
@reads_by_key
async def current_account(request: Request) -> JsonApiResponse:
    reader = reader_of(request)
    row = await accounts.read(reader.connection, reader)
    attributes = {
        "name": row["name"],
        "created_at": timestamp(row["created_at"]),
        "updated_at": timestamp(row["updated_at"]),
    }
    return respond({"data": {"type": "account", "id": str(row["id"]), "attributes": attributes}})


@router.get(
    "/accounts/current/settings",
    response_class=JSONResponse,
    response_model=dict[str, Any],
    summary="The account's settings, a plain JSON object",
)
async def get_settings(caller: Viewer, connection: Database) -> JSONResponse:
    return JSONResponse(await accounts.settings(connection, caller.account_id))


@router.put(
    "/accounts/current/settings",
    response_class=JSONResponse,
    response_model=dict[str, Any],
    summary="Replace the account's settings with the object sent (ADMIN)",
)
async def replace_settings(
    settings: Annotated[JsonObject, Body()], caller: Admin, connection: Database
) -> JSONResponse:
    try:
        bounded_json(MAX_USER_ATTRIBUTES_BYTES)(settings)
    except ValueError as error:
        raise UnprocessableContent(f"the settings {error}", pointer="") from None
    stored = await accounts.replace_settings(connection, caller.account_id, settings)
    return JSONResponse(stored)


class ReportedContext(Strict):
    type: ContextType
    key: ContextKey
    attributes: JsonObject | None = None


class ContextReport(Strict):
    contexts: Annotated[list[ReportedContext], Field(max_length=MAX_CONTEXTS)]


@router.post(
    "/contexts/bulk",
    response_class=JsonApiResponse,
    response_model=schemas.Registered,
    summary="Record the contexts an SDK reports in use (MEMBER)",
)
async def record_contexts(
    body: Annotated[ContextReport, JsonApiBody],
    caller: Member,
    connection: Database,
    quotas: Quotas,
) -> JsonApiResponse:
    latest: dict[tuple[str, str], dict[str, Any] | None] = {}
    for position, context in enumerate(body.contexts):
        if context.attributes is not None:
            try:
                bounded_json(MAX_CONFIG_JSON_BYTES)(context.attributes)
            except ValueError as error:
                raise UnprocessableContent(
                    f"the attributes {error}", pointer=f"/contexts/{position}/attributes"
                ) from None
        latest[(context.type, context.key)] = context.attributes
    added = False
    for (context_type, key), attributes in sorted(latest.items()):
        statement = insert(contexts).values(
            account_id=caller.account_id, type=context_type, key=key, attributes=attributes or {}
        )
        changes: dict[str, Any] = {"last_seen_at": func.now()}
        if attributes is not None:
            changes["attributes"] = statement.excluded.attributes
        # A row made by this transaction has its creation time: now().
        added |= bool(
            await connection.scalar(
                statement.on_conflict_do_update(
                    constraint="contexts_account_id_type_key_key", set_=changes
                ).returning(contexts.c.created_at == func.now())
            )
        )
    if added:
        await quotas.hold(connection, caller.account_id, Kind.CONTEXTS)
    return respond({"registered": len(latest)})
