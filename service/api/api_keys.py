"""API keys of the caller's account. The secret is returned once, at creation.

A key acts as its user, with the user's role capped at the role its maker had
when it made it (`max_role`): a key never gains power after it is made, so a
key an ADMIN made for a MEMBER stays below OWNER if that MEMBER is promoted.
Nobody creates or revokes keys of a user who outranks them, and the account's
last key that acts as OWNER cannot be revoked (make another one first).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from pydantic import Field, StringConstraints
from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from service.api import keys
from service.api.config_events import announce_revoked_keys
from service.api.dependencies import Admin, Caller, Database, capped_role
from service.api.errors import Conflict, Forbidden, JsonApiResponse, UnprocessableContent
from service.api.json_body import JsonApiRoute
from service.api.jsonapi import (
    Document,
    JsonApiBody,
    PageQuery,
    Strict,
    expect_type,
    listing,
    related_id,
    resource,
    respond,
    single,
)
from service.api.limits import NO_NUL
from service.api.queries import paged
from service.api.quotas import Quotas
from service.api.schemas import (
    Described,
    attribute_names,
    list_document,
    resource_object,
    single_document,
    to_one,
)
from service.models import ApiKey, Role, User, table
from service.quotas import Kind
from service.storage import lock_account, one_in_account, rows

router = APIRouter(prefix="/api-keys", tags=["api-keys"], route_class=JsonApiRoute)
api_keys = table(ApiKey)
users = table(User)
TYPE = "api-keys"
# Never selected back out: the digest stays in the database.
_PUBLIC = [column for column in api_keys.c if column.name != "secret_hash"]


class ApiKeyCreate(Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL)]


class ApiKeyView(Described):
    name: str
    prefix: str = Field(description="The key's first characters, to recognise it by")
    max_role: Role | None = Field(
        description="The role the key is capped at: its maker's when it was made"
    )
    last_used_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ApiKeyCreatedView(ApiKeyView):
    secret: str = Field(description="The key itself: shown in this answer only")


ATTRIBUTES = attribute_names(ApiKeyView)
_RELATIONSHIPS = {"user": to_one("users"), "created_by": to_one("users")}
ApiKeyResource = resource_object("ApiKey", TYPE, ApiKeyView, _RELATIONSHIPS)
ApiKeyCreatedResource = resource_object("ApiKeyCreated", TYPE, ApiKeyCreatedView, _RELATIONSHIPS)
ApiKeyDocument = single_document(ApiKeyResource)
ApiKeyList = list_document(ApiKeyResource)


def key_resource(row: Any, secret: str | None = None) -> dict[str, Any]:
    document = resource(
        TYPE,
        row,
        ATTRIBUTES,
        {"user": ("users", row["user_id"]), "created_by": ("users", row["created_by_user_id"])},
    )
    document["links"] = {"self": f"/v1/api-keys/{row['id']}"}
    if secret is not None:
        document["attributes"]["secret"] = secret
    return document


async def issue_key(
    connection: AsyncConnection,
    account_id: uuid.UUID,
    user_id: uuid.UUID,
    name: str,
    *,
    max_role: Role,
    made_by: uuid.UUID | None,
) -> dict[str, Any]:
    """Create a key; the only time its secret is known to the service.

    `made_by` is the user who made it (None: the operator), `max_role` the role
    it is capped at: its maker's, now.
    """
    secret = keys.new_key()
    statement = (
        insert(api_keys)
        .values(
            account_id=account_id,
            user_id=user_id,
            name=name,
            prefix=keys.visible_prefix(secret),
            secret_hash=keys.digest(secret),
            max_role=max_role,
            created_by_user_id=made_by,
        )
        .returning(*_PUBLIC)
    )
    row = (await connection.execute(statement)).mappings().one()
    return key_resource(row, secret)


@router.get(
    "",
    response_class=JsonApiResponse,
    response_model=ApiKeyList,
    summary="List API keys, without secrets (ADMIN)",
)
async def list_keys(
    request: Request, page: PageQuery, caller: Admin, connection: Database
) -> Response:
    query = select(*_PUBLIC).where(api_keys.c.account_id == caller.account_id)
    found = await rows(connection, paged(query, api_keys, page))
    return listing(request, page, found, key_resource)


@router.get(
    "/{key_id}",
    response_class=JsonApiResponse,
    response_model=ApiKeyDocument,
    summary="Get an API key, without its secret (ADMIN)",
)
async def get_key(key_id: uuid.UUID, caller: Admin, connection: Database) -> JsonApiResponse:
    row = await one_in_account(connection, api_keys, caller.account_id, key_id, _PUBLIC)
    return respond(single(key_resource(row)))


@router.post(
    "",
    status_code=201,
    response_class=JsonApiResponse,
    response_model=single_document(ApiKeyCreatedResource),
    summary="Create an API key for a user (default: the caller's), capped at the caller's role; "
    "the secret is shown once (ADMIN)",
)
async def create_key(
    body: Annotated[Document[ApiKeyCreate], JsonApiBody],
    caller: Admin,
    connection: Database,
    quotas: Quotas,
) -> JsonApiResponse:
    expect_type(body, TYPE)
    given, user_id = related_id(body, "user", "users")
    if given and user_id is None:
        raise UnprocessableContent(
            "a key must belong to a user", pointer="/data/relationships/user/data"
        )
    user = await one_in_account(connection, users, caller.account_id, user_id or caller.user_id)
    _may_act_on_keys_of(caller, user["role"], "create keys for")
    document = await issue_key(
        connection,
        caller.account_id,
        user["id"],
        body.data.attributes.name,
        max_role=caller.role,
        made_by=caller.user_id,
    )
    await quotas.hold(connection, caller.account_id, Kind.API_KEYS)
    headers = {"Location": document["links"]["self"], "Cache-Control": "no-store"}
    return respond(single(document), 201, headers)


@router.delete(
    "/{key_id}",
    status_code=204,
    summary="Revoke an API key; it is refused from then on (ADMIN; not the last OWNER key)",
)
async def revoke_key(key_id: uuid.UUID, caller: Admin, connection: Database) -> Response:
    await lock_account(connection, caller.account_id)
    key = await one_in_account(connection, api_keys, caller.account_id, key_id, _PUBLIC)
    user_role = str(
        await connection.scalar(select(users.c.role).where(users.c.id == key["user_id"]))
    )
    _may_act_on_keys_of(caller, user_role, "revoke keys of")
    await connection.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=func.now(), updated_at=func.now())
    )
    if key["revoked_at"] is None and capped_role(user_role, key["max_role"]) is Role.OWNER:
        await keep_an_owner_key(connection, caller.account_id)
    if key["revoked_at"] is None:
        await announce_revoked_keys(connection, caller.account_id, [key_id])
    return Response(status_code=204)


def _may_act_on_keys_of(caller: Caller, role: str, action: str) -> None:
    if not caller.role.at_least(Role(role)):
        raise Forbidden(f"a key acting as {caller.role} cannot {action} a user who is {role}")


async def keep_an_owner_key(connection: AsyncConnection, account_id: uuid.UUID) -> None:
    """409 unless a live key still acts as OWNER: without one, nobody could
    act as the account's owner again (only the operator's recovery could)."""
    remaining = await connection.scalar(
        select(api_keys.c.id)
        .join(users, users.c.id == api_keys.c.user_id)
        .where(
            api_keys.c.account_id == account_id,
            api_keys.c.revoked_at.is_(None),
            users.c.role == Role.OWNER,
            or_(api_keys.c.max_role.is_(None), api_keys.c.max_role == Role.OWNER),
        )
        .limit(1)
    )
    if remaining is None:
        raise Conflict(
            "the account would have no key left that acts as OWNER; make another OWNER key first",
        )
