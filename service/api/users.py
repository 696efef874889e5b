"""Users of the caller's account."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import Field, StringConstraints
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from service.api.api_keys import keep_an_owner_key
from service.api.config_events import announce_revoked_keys
from service.api.dependencies import Admin, Caller, Database, Viewer
from service.api.errors import Conflict, Forbidden, JsonApiResponse, UnprocessableContent
from service.api.json_body import JsonApiRoute
from service.api.jsonapi import (
    Document,
    JsonApiBody,
    PageQuery,
    Strict,
    changed_attributes,
    expect_type,
    listing,
    resource,
    respond,
    single,
)
from service.api.limits import NO_NUL, UserAttributes
from service.api.queries import paged
from service.api.quotas import Quotas
from service.api.schemas import (
    Described,
    StoredObject,
    attribute_names,
    list_document,
    resource_object,
    single_document,
)
from service.models import ApiKey, Role, User, table
from service.quotas import Kind
from service.storage import conflict_from, lock_account, one_in_account, rows

router = APIRouter(prefix="/users", tags=["users"], route_class=JsonApiRoute)
users = table(User)
api_keys = table(ApiKey)
TYPE = "users"
CONFLICTS = {
    "users_account_id_lower_email_key": (
        "a user with this email already exists",
        "/data/attributes/email",
    ),
    "users_account_id_auth_provider_auth_subject_key": (
        "a user with this auth_provider and auth_subject already exists",
        "/data/attributes/auth_subject",
    ),
}

# No "@", spaces or control characters in either part. Spelt with explicit
# ranges, not \s, which Python and the JSON Schema (ECMA) regex of the OpenAPI
# document read differently (Python counts \x1c-\x1f as spaces).
_EMAIL_PART = r"[^@\x00-\x20\x7f]+"
# 254: the longest address SMTP carries (RFC 5321's path limit).
Email = Annotated[
    str, StringConstraints(max_length=254, pattern=f"^{_EMAIL_PART}@{_EMAIL_PART}\\.{_EMAIL_PART}$")
]
SUBJECT_LENGTH = 255
Provider = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
]
Subject = Annotated[str, StringConstraints(min_length=1, max_length=SUBJECT_LENGTH, pattern=NO_NUL)]


class UserCreate(Strict):
    email: Email
    role: Role = Role.MEMBER
    auth_provider: Provider = "email"
    auth_subject: Subject | None = Field(
        default=None, description="Defaults to the lower-cased email."
    )
    attributes: UserAttributes = Field(default_factory=dict)

    def subject(self, pointer: str) -> str:
        """The auth_subject, by default the lower-cased email, which must fit its
        column: lower-casing may lengthen a string ("İ" becomes two characters)."""
        if self.auth_subject is not None:
            return self.auth_subject
        subject = self.email.lower()
        if len(subject) > SUBJECT_LENGTH:
            raise UnprocessableContent(
                f"the lower-cased email is the user's auth_subject, of at most {SUBJECT_LENGTH} "
                "characters: give a shorter auth_subject",
                pointer=f"{pointer}/email",
            )
        return subject


class UserUpdate(Strict):
    email: Email | None = None
    role: Role | None = None
    attributes: UserAttributes | None = None


class UserView(Described):
    email: str
    role: Role
    auth_provider: str
    auth_subject: str
    attributes: StoredObject
    created_at: datetime
    updated_at: datetime


ATTRIBUTES = attribute_names(UserView)
UserResource = resource_object("User", TYPE, UserView)
UserDocument = single_document(UserResource)
UserList = list_document(UserResource)


def user_resource(row: Any) -> dict[str, Any]:
    return resource(TYPE, row, ATTRIBUTES)


@router.get(
    "",
    response_class=JsonApiResponse,
    response_model=UserList,
    summary="List users (filter[email], filter[role])",
)
async def list_users(
    request: Request,
    page: PageQuery,
    caller: Viewer,
    connection: Database,
    email: Annotated[
        str | None,
        Query(alias="filter[email]", description="case-insensitive", pattern=NO_NUL),
    ] = None,
    role: Annotated[Role | None, Query(alias="filter[role]")] = None,
) -> Response:
    query = select(users).where(users.c.account_id == caller.account_id)
    if email is not None:
        query = query.where(func.lower(users.c.email) == email.lower())
    if role is not None:
        query = query.where(users.c.role == role)
    found = await rows(connection, paged(query, users, page))
    return listing(request, page, found, user_resource)


@router.get(
    "/{user_id}", response_class=JsonApiResponse, response_model=UserDocument, summary="Get a user"
)
async def get_user(user_id: uuid.UUID, caller: Viewer, connection: Database) -> JsonApiResponse:
    return respond(
        single(user_resource(await one_in_account(connection, users, caller.account_id, user_id)))
    )


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
    row = await insert_user(connection, caller.account_id, values, "/data/attributes")
    await quotas.hold(connection, caller.account_id, Kind.USERS)
    return respond(single(user_resource(row)), 201, {"Location": f"/v1/users/{row['id']}"})


async def insert_user(
    connection: AsyncConnection, account_id: uuid.UUID, values: UserCreate, pointer: str
) -> Any:
    """Insert a user; `pointer` locates `values` in the request body, for errors."""
    statement = (
        insert(users)
        .values(
            account_id=account_id,
            email=values.email,
            role=values.role,
            auth_provider=values.auth_provider,
            auth_subject=values.subject(pointer),
            attributes=values.attributes,
        )
        .returning(users)
    )
    try:
        return (await connection.execute(statement)).mappings().one()
    except IntegrityError as error:
        raise conflict_from(error, CONFLICTS) from None


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
    await lock_account(connection, caller.account_id)
    current = await one_in_account(connection, users, caller.account_id, user_id)
    _may_manage(caller, current["role"])
    demoted_owner = current["role"] == Role.OWNER and changes.get("role", Role.OWNER) != Role.OWNER
    if "role" in changes:
        _may_grant(caller, changes["role"])
        if demoted_owner:
            await _keep_an_owner(connection, caller.account_id)
    if not changes:
        return respond(single(user_resource(current)))
    statement = (
        update(users)
        .where(users.c.id == user_id)
        .values(**changes, updated_at=func.now())
        .returning(users)
    )
    try:
        row = (await connection.execute(statement)).mappings().one()
    except IntegrityError as error:
        raise conflict_from(error, CONFLICTS) from None
    if demoted_owner:
        await keep_an_owner_key(connection, caller.account_id)
    return respond(single(user_resource(row)))


@router.delete("/{user_id}", status_code=204, summary="Delete a user and their API keys (ADMIN)")
async def delete_user(user_id: uuid.UUID, caller: Admin, connection: Database) -> Response:
    await lock_account(connection, caller.account_id)
    current = await one_in_account(connection, users, caller.account_id, user_id)
    _may_manage(caller, current["role"])
    if current["role"] == Role.OWNER:
        await _keep_an_owner(connection, caller.account_id)
    live_keys = await connection.scalars(
        select(api_keys.c.id).where(api_keys.c.user_id == user_id, api_keys.c.revoked_at.is_(None))
    )
    await connection.execute(delete(users).where(users.c.id == user_id))
    if current["role"] == Role.OWNER:
        await keep_an_owner_key(connection, caller.account_id)
    await announce_revoked_keys(connection, caller.account_id, list(live_keys))
    return Response(status_code=204)


async def _keep_an_owner(connection: AsyncConnection, account_id: uuid.UUID) -> None:
    owners = await connection.scalar(
        select(func.count()).where(users.c.account_id == account_id, users.c.role == Role.OWNER)
    )
    if (owners or 0) <= 1:
        raise Conflict(
            "the account's last owner cannot be removed or demoted",
            pointer="/data/attributes/role",
        )


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
