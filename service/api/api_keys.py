"""API keys of the caller's account. The secret is returned once, at creation."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from pydantic import StringConstraints
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from service import keys
from service.api.common import one_in_account, paged, rows
from service.api.dependencies import Admin, Database
from service.api.jsonapi import (
    Document,
    Page,
    Strict,
    expect_type,
    listing,
    related_id,
    resource,
    respond,
    single,
)
from service.errors import ApiError, JsonApiResponse
from service.models import ApiKey, User, table

router = APIRouter(prefix="/api-keys", tags=["api-keys"])
api_keys = table(ApiKey)
users = table(User)
TYPE = "api-keys"
ATTRIBUTES = ("name", "prefix", "last_used_at", "revoked_at", "created_at", "updated_at")
# Never selected back out: the digest stays in the database.
_PUBLIC = [column for column in api_keys.c if column.name != "secret_hash"]


class ApiKeyCreate(Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]


def key_resource(row: Any, secret: str | None = None) -> dict[str, Any]:
    document = resource(TYPE, row, ATTRIBUTES, {"user": ("users", row["user_id"])})
    document["links"] = {"self": f"/v1/api-keys/{row['id']}"}
    if secret is not None:
        document["attributes"]["secret"] = secret
    return document


async def issue_key(
    connection: AsyncConnection, account_id: uuid.UUID, user_id: uuid.UUID, name: str
) -> dict[str, Any]:
    """Create a key; the only time its secret is known to the service."""
    secret = keys.new_key()
    statement = (
        insert(api_keys)
        .values(
            account_id=account_id,
            user_id=user_id,
            name=name,
            prefix=keys.visible_prefix(secret),
            secret_hash=keys.digest(secret),
        )
        .returning(*_PUBLIC)
    )
    row = (await connection.execute(statement)).mappings().one()
    return key_resource(row, secret)


@router.get("", response_class=JsonApiResponse, summary="List API keys, without secrets (ADMIN)")
async def list_keys(request: Request, caller: Admin, connection: Database) -> JsonApiResponse:
    page = Page.from_request(request)
    query = select(*_PUBLIC).where(api_keys.c.account_id == caller.account_id)
    found = await rows(connection, paged(query, api_keys, page))
    return respond(listing(request, page, found, [key_resource(row) for row in found]))


@router.get(
    "/{key_id}",
    response_class=JsonApiResponse,
    summary="Get an API key, without its secret (ADMIN)",
)
async def get_key(key_id: uuid.UUID, caller: Admin, connection: Database) -> JsonApiResponse:
    row = await one_in_account(connection, api_keys, caller.account_id, key_id)
    return respond(single(key_resource(row)))


@router.post(
    "",
    status_code=201,
    response_class=JsonApiResponse,
    summary="Create an API key for a user (default: the caller's); the secret is shown once (ADMIN)",
)
async def create_key(
    body: Document[ApiKeyCreate], caller: Admin, connection: Database
) -> JsonApiResponse:
    expect_type(body, TYPE)
    given, user_id = related_id(body, "user", "users")
    if given and user_id is None:
        raise ApiError(422, "a key must belong to a user", pointer="/data/relationships/user/data")
    user = await one_in_account(connection, users, caller.account_id, user_id or caller.user_id)
    if not caller.outranks_or_equals(user["role"]):
        raise ApiError(
            403, f"a {caller.role} cannot create keys for a user whose role is {user['role']}"
        )
    document = await issue_key(connection, caller.account_id, user["id"], body.data.attributes.name)
    headers = {"Location": document["links"]["self"], "Cache-Control": "no-store"}
    return respond(single(document), 201, headers)


@router.delete(
    "/{key_id}", status_code=204, summary="Revoke an API key; it is refused from then on (ADMIN)"
)
async def revoke_key(key_id: uuid.UUID, caller: Admin, connection: Database) -> Response:
    await one_in_account(connection, api_keys, caller.account_id, key_id)
    await connection.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=func.now(), updated_at=func.now())
    )
    return Response(status_code=204)
