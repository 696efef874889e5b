"""Accounts: created by the operator; each key sees and edits its own. The
rules and the storage are the accounts core's (service/accounts/accounts.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Request
from pydantic import Field

from service.accounts import accounts
from service.api.account_shapes import (
    AccountCreate,
    ApiKeyCreatedResource,
    EnvironmentResource,
    Name,
    UserResource,
    environment_resource,
    new_key_resource,
    user_resource,
)
from service.api.dependencies import Database, Operator, Owner, reader_of, reads_by_key
from service.api.errors import JsonApiResponse
from service.api.jsonapi import (
    Document,
    JsonApiBody,
    Strict,
    expect_type,
    resource,
    respond,
    single,
)
from service.api.openapi import OPERATOR_ONLY
from service.api.routers import V1_PATH, dialect_router
from service.api.schemas import (
    Described,
    attribute_names,
    list_of,
    resource_object,
    single_document,
    to_many,
    to_one,
)

router = dialect_router(V1_PATH, tags=["accounts"])
TYPE = "accounts"


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
    values = body.data.attributes
    created = await accounts.create(connection, values.name, values.owner.new_user())
    owner = user_resource(created.owner)
    environments = [environment_resource(row) for row in created.environments]
    key = new_key_resource(created.key)
    document = account_resource(created.account)
    # Full linkage: every included resource is named by the primary data.
    document["relationships"] = {
        "owner": {"data": _identifiers([owner])[0]},
        "environments": {"data": _identifiers(environments)},
        "api-keys": {"data": _identifiers([key])},
    }
    return respond(
        single(document, included=[owner, *environments, key]),
        201,
        {"Location": "/v1/account", "Cache-Control": "no-store"},
    )


@router.get(
    "/account",
    response_class=JsonApiResponse,
    response_model=AccountDocument,
    summary="The caller's account",
)
@reads_by_key
async def get_account(request: Request) -> JsonApiResponse:
    reader = reader_of(request)
    return respond(single(account_resource(await accounts.read(reader.connection, reader))))


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
    row = await accounts.rename(connection, caller.account_id, body.data.attributes.name)
    return respond(single(account_resource(row)))
