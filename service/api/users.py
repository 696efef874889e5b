"""Users of the caller's account."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Query, Request, Response

from service.accounts import users
from service.api.account_shapes import (
    USERS,
    Email,
    UserCreate,
    UserResource,
    user_resource,
)
from service.api.dependencies import Admin, Caller, Database, reader_of, reads_by_key
from service.api.errors import Forbidden, JsonApiResponse
from service.api.jsonapi import (
    Document,
    JsonApiBody,
    PageQuery,
    Strict,
    changed_attributes,
    expect_type,
    listing,
    respond,
    single,
)
from service.api.limits import NO_NUL, UserAttributes
from service.api.quotas import Quotas
from service.api.routers import V1_PATH, dialect_router
from service.api.schemas import list_document, single_document
from service.configs.events import announce_revoked_keys
from service.models import Role
from service.quotas import Kind
from service.storage import read_in_account

router = dialect_router(V1_PATH, "/users", tags=["users"])
TYPE = USERS


class UserUpdate(Strict):
    email: Email | None = None
    role: Role | None = None
    attributes: UserAttributes | None = None


UserDocument = single_document(UserResource)
UserList = list_document(UserResource)


@router.get(
    "",
    response_class=JsonApiResponse,
    response_model=UserList,
    summary="List users (filter[email], filter[role])",
)
@reads_by_key
async def list_users(
    request: Request,
    page: PageQuery,
    email: Annotated[
        str | None,
        Query(alias="filter[email]", description="case-insensitive", pattern=NO_NUL),
    ] = None,
    role: Annotated[Role | None, Query(alias="filter[role]")] = None,
) -> Response:
    reader = reader_of(request)
    found = await users.page(
        reader.connection, reader, page.size, page.after, page.descending, email=email, role=role
    )
    return listing(request, page, found, user_resource)


@router.get(
    "/{user_id}", response_class=JsonApiResponse, response_model=UserDocument, summary="Get a user"
)
@reads_by_key
async def get_user(user_id: uuid.UUID, request: Request) -> JsonApiResponse:
    reader = reader_of(request)
    row = await read_in_account(reader.connection, reader, users.users, user_id)
    return respond(single(user_resource(row)))


@router.post(
    "",
    status_code=201,
    response_class=JsonApiResponse,
    response_model=UserDocument,
    summary="Create a user (ADMIN)",
)
async def create_user(
    body: Annotated[Document[UserCreate], JsonApiBody],
    caller: Admin,
    connection: Database,
    quotas: Quotas,
) -> JsonApiResponse:
    expect_type(body, TYPE)
    values = body.data.attributes
    _may_grant(caller, values.role)
    row = await users.insert_user(
        connection, caller.account_id, values.new_user(), "/data/attributes"
    )
    await quotas.hold(connection, caller.account_id, Kind.USERS)
    return respond(single(user_resource(row)), 201, {"Location": f"/v1/users/{row['id']}"})


@router.patch(
    "/{user_id}",
    response_class=JsonApiResponse,
    response_model=UserDocument,
    summary="Update a user's email, role or attributes (ADMIN)",
)
async def update_user(
    user_id: uuid.UUID,
    body: Annotated[Document[UserUpdate], JsonApiBody],
    caller: Admin,
    connection: Database,
) -> JsonApiResponse:
    expect_type(body, TYPE, user_id)
    changes = changed_attributes(body, not_null=("email", "role", "attributes"))
    current = await users.locked(connection, caller.account_id, user_id)
    _may_manage(caller, current["role"])
    if "role" in changes:
        _may_grant(caller, changes["role"])
    return respond(
        single(user_resource(await users.change(connection, caller.account_id, current, changes)))
    )


@router.delete("/{user_id}", status_code=204, summary="Delete a user and their API keys (ADMIN)")
async def delete_user(user_id: uuid.UUID, caller: Admin, connection: Database) -> Response:
    current = await users.locked(connection, caller.account_id, user_id)
    _may_manage(caller, current["role"])
    revoked = await users.remove(connection, caller.account_id, current)
    await announce_revoked_keys(connection, caller.account_id, revoked)
    return Response(status_code=204)


def _may_grant(caller: Caller, role: Role) -> None:
    if not caller.role.at_least(role):
        raise Forbidden(
            f"a key acting as {caller.role} cannot grant the role {role}",
            pointer="/data/attributes/role",
        )


def _may_manage(caller: Caller, role: str) -> None:
    if not caller.role.at_least(Role(role)):
        raise Forbidden(
            f"a key acting as {caller.role} cannot change or remove a user who is {role}"
        )
