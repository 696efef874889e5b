"""API keys of the caller's account. The secret is returned once, at creation.

A key acts as its user, with the user's role capped at the role its maker had
when it made it (`max_role`): a key never gains power after it is made, so a
key an ADMIN made for a MEMBER stays below OWNER if that MEMBER is promoted.
Nobody creates or revokes keys of a user who outranks them, and the account's
last key that acts as OWNER cannot be revoked (make another one first). The
rules and the storage are the accounts core's (service/accounts/keys.py).
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Request, Response
from pydantic import StringConstraints

from service.accounts import keys, users
from service.api.account_shapes import (
    API_KEYS,
    ApiKeyCreatedResource,
    ApiKeyResource,
    key_resource,
    new_key_resource,
)
from service.api.dependencies import Admin, Caller, Database
from service.api.errors import Forbidden, JsonApiResponse, UnprocessableContent
from service.api.jsonapi import (
    Document,
    JsonApiBody,
    PageQuery,
    Strict,
    expect_type,
    listing,
    related_id,
    respond,
    single,
)
from service.api.limits import NO_NUL
from service.api.queries import paged
from service.api.quotas import Quotas
from service.api.routers import V1_PATH, dialect_router
from service.api.schemas import list_document, single_document
from service.configs.events import announce_revoked_keys
from service.models import Role
from service.quotas import Kind
from service.storage import rows

router = dialect_router(V1_PATH, "/api-keys", tags=["api-keys"])
TYPE = API_KEYS


class ApiKeyCreate(Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL)]


ApiKeyDocument = single_document(ApiKeyResource)
ApiKeyList = list_document(ApiKeyResource)


@router.get(
    "",
    response_class=JsonApiResponse,
    response_model=ApiKeyList,
    summary="List API keys, without secrets (ADMIN)",
)
async def list_keys(
    request: Request, page: PageQuery, caller: Admin, connection: Database
) -> Response:
    found = await rows(connection, paged(keys.of_account(caller.account_id), keys.api_keys, page))
    return listing(request, page, found, key_resource)


@router.get(
    "/{key_id}",
    response_class=JsonApiResponse,
    response_model=ApiKeyDocument,
    summary="Get an API key, without its secret (ADMIN)",
)
async def get_key(key_id: uuid.UUID, caller: Admin, connection: Database) -> JsonApiResponse:
    return respond(single(key_resource(await keys.get(connection, caller.account_id, key_id))))


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
    user = await users.get(connection, caller.account_id, user_id or caller.user_id)
    _may_act_on_keys_of(caller, user["role"], "create keys for")
    key = await keys.issue(
        connection,
        caller.account_id,
        user["id"],
        body.data.attributes.name,
        max_role=caller.role,
        made_by=caller.user_id,
    )
    await quotas.hold(connection, caller.account_id, Kind.API_KEYS)
    document = new_key_resource(key)
    headers = {"Location": document["links"]["self"], "Cache-Control": "no-store"}
    return respond(single(document), 201, headers)


@router.delete(
    "/{key_id}",
    status_code=204,
    summary="Revoke an API key; it is refused from then on (ADMIN; not the last OWNER key)",
)
async def revoke_key(key_id: uuid.UUID, caller: Admin, connection: Database) -> Response:
    key = await keys.to_revoke(connection, caller.account_id, key_id)
    _may_act_on_keys_of(caller, key.user_role, "revoke keys of")
    if await keys.revoke(connection, caller.account_id, key):
        await announce_revoked_keys(connection, caller.account_id, [key_id])
    return Response(status_code=204)


def _may_act_on_keys_of(caller: Caller, role: str, action: str) -> None:
    if not caller.role.at_least(Role(role)):
        raise Forbidden(f"a key acting as {caller.role} cannot {action} a user who is {role}")
