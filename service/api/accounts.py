"""Accounts: created by the operator; each key sees and edits its own."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import Field, StringConstraints
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from service.api import environments as environments_api
from service.api.api_keys import ApiKeyCreatedResource, issue_key
from service.api.dependencies import Database, Operator, Owner, Viewer
from service.api.environments import EnvironmentResource
from service.api.errors import JsonApiResponse, UnprocessableContent
from service.api.json_body import JsonApiRoute
from service.api.jsonapi import (
    Document,
    JsonApiBody,
    Strict,
    expect_type,
    resource,
    respond,
    single,
)
from service.api.limits import NO_NUL
from service.api.openapi import OPERATOR_ONLY
from service.api.schemas import (
    Described,
    attribute_names,
    list_of,
    resource_object,
    single_document,
    to_many,
    to_one,
)
from service.api.users import UserCreate, UserResource, insert_user, user_resource
from service.models import Account, Role, table

router = APIRouter(tags=["accounts"], route_class=JsonApiRoute)
accounts = table(Account)
TYPE = "accounts"
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL)]


class AccountView(Described):
    name: str
    created_at: datetime
    updated_at: datetime


ATTRIBUTES = attribute_names(AccountView)
AccountDocument = single_document(resource_object("Account", TYPE, AccountView))
CreatedAccount = resource_object(
    "CreatedAccount",
    TYPE,
    AccountView,
    {
        "owner": to_one("users"),
        "environments": to_many("environments"),
        "api-keys": to_many("api-keys"),
    },
)
CreatedAccountDocument = single_document(
    CreatedAccount,
    included=(
        list_of(UserResource, EnvironmentResource, ApiKeyCreatedResource),
        Field(description="The owner, the default environments and the first key (its secret)"),
    ),
)


class AccountOwner(UserCreate):
    """The account's first user: its OWNER, whose role need not be spelled out."""

    role: Role = Role.OWNER


class AccountCreate(Strict):
    name: Name
    owner: AccountOwner


class AccountUpdate(Strict):
    name: Name


def account_resource(row: Any) -> dict[str, Any]:
    document = resource(TYPE, row, ATTRIBUTES)
    document["links"] = {"self": "/v1/account"}
    return document


def _identifiers(resources: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"type": item["type"], "id": item["id"]} for item in resources]


@router.post(
    "/accounts",
    status_code=201,
    response_class=JsonApiResponse,
    response_model=CreatedAccountDocument,
    dependencies=[Operator],
    openapi_extra=OPERATOR_ONLY,
    summary="Create an account with its owner, default environments and a first API key (operator token)",
)
async def create_account(
    body: Annotated[Document[AccountCreate], JsonApiBody], connection: Database
) -> JsonApiResponse:
    expect_type(body, TYPE)
    created = await insert_account(connection, body.data.attributes)
    document = account_resource(created.account)
    # Full linkage: every included resource is named by the primary data.
    document["relationships"] = {
        "owner": {"data": _identifiers([created.owner])[0]},
        "environments": {"data": _identifiers(created.environments)},
        "api-keys": {"data": _identifiers([created.key])},
    }
    return respond(
        single(document, included=[created.owner, *created.environments, created.key]),
        201,
        {"Location": "/v1/account", "Cache-Control": "no-store"},
    )


@dataclass(frozen=True)
class NewAccount:
    """An account as created: its row, and its owner, environments and first key
    as JSON:API resources (the key's with its secret, known only now)."""

    account: Any
    owner: dict[str, Any]
    environments: list[dict[str, Any]]
    key: dict[str, Any]


async def insert_account(connection: AsyncConnection, values: AccountCreate) -> NewAccount:
    """An account with its OWNER, default environments and first key: for the
    operator's API call and for `python -m service accounts create` alike."""
    if values.owner.role is not Role.OWNER:
        raise UnprocessableContent(
            "the first user of an account is its OWNER", pointer="/data/attributes/owner/role"
        )
    account = (
        (await connection.execute(insert(accounts).values(name=values.name).returning(accounts)))
        .mappings()
        .one()
    )
    owner_row = await insert_user(connection, account["id"], values.owner, "/data/attributes/owner")
    created_environments = [
        environments_api.environment_resource(row)
        for row in await environments_api.create_defaults(connection, account["id"])
    ]
    key = await issue_key(
        connection, account["id"], owner_row["id"], "first key", max_role=Role.OWNER, made_by=None
    )
    return NewAccount(account, user_resource(owner_row), created_environments, key)


@router.get(
    "/account",
    response_class=JsonApiResponse,
    response_model=AccountDocument,
    summary="The caller's account",
)
async def get_account(caller: Viewer, connection: Database) -> JsonApiResponse:
    row = (
        (await connection.execute(select(accounts).where(accounts.c.id == caller.account_id)))
        .mappings()
        .one()
    )
    return respond(single(account_resource(row)))


@router.patch(
    "/account",
    response_class=JsonApiResponse,
    response_model=AccountDocument,
    summary="Rename the caller's account (OWNER)",
)
async def update_account(
    body: Annotated[Document[AccountUpdate], JsonApiBody], caller: Owner, connection: Database
) -> JsonApiResponse:
    expect_type(body, TYPE, caller.account_id)
    statement = (
        update(accounts)
        .where(accounts.c.id == caller.account_id)
        .values(name=body.data.attributes.name, updated_at=func.now())
        .returning(accounts)
    )
    return respond(single(account_resource((await connection.execute(statement)).mappings().one())))
