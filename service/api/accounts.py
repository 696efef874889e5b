"""Accounts: created by the operator; each key sees and edits its own."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import StringConstraints
from sqlalchemy import func, insert, select, update

from service.api import environments as environments_api
from service.api.api_keys import issue_key
from service.api.dependencies import Database, Owner, Viewer
from service.api.jsonapi import Document, Strict, expect_type, resource, respond, single
from service.api.users import UserCreate, insert_user, user_resource
from service.errors import ApiError, JsonApiResponse
from service.models import Account, table

router = APIRouter(tags=["accounts"])
accounts = table(Account)
TYPE = "accounts"
ATTRIBUTES = ("name", "created_at", "updated_at")
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class AccountCreate(Strict):
    name: Name
    owner: UserCreate


class AccountUpdate(Strict):
    name: Name


def account_resource(row: Any) -> dict[str, Any]:
    document = resource(TYPE, row, ATTRIBUTES)
    document["links"] = {"self": "/v1/account"}
    return document


def _require_operator(request: Request) -> None:
    token = request.app.state.operator_token
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if token is None:
        raise ApiError(403, "account creation is disabled: OPERATOR_TOKEN is not set")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        presented.strip().encode(), token.encode()
    ):
        raise ApiError(
            401,
            "the operator token is required",
            headers={"WWW-Authenticate": 'Bearer realm="operator"'},
        )


@router.post(
    "/accounts",
    status_code=201,
    response_class=JsonApiResponse,
    summary="Create an account with its owner, default environments and a first API key (operator token)",
)
async def create_account(
    request: Request, body: Document[AccountCreate], connection: Database
) -> JsonApiResponse:
    _require_operator(request)
    expect_type(body, TYPE)
    values = body.data.attributes
    if values.owner.role != "OWNER":
        raise ApiError(
            422, "the first user of an account is its OWNER", pointer="/data/attributes/owner/role"
        )
    account = (
        (await connection.execute(insert(accounts).values(name=values.name).returning(accounts)))
        .mappings()
        .one()
    )
    owner = await insert_user(connection, account["id"], values.owner)
    created_environments = await environments_api.create_defaults(connection, account["id"])
    key = await issue_key(connection, account["id"], owner["id"], "first key")
    return respond(
        single(
            account_resource(account),
            included=[
                user_resource(owner),
                *map(environments_api.environment_resource, created_environments),
                key,
            ],
        ),
        201,
        {"Location": "/v1/account", "Cache-Control": "no-store"},
    )


@router.get("/account", response_class=JsonApiResponse, summary="The caller's account")
async def get_account(caller: Viewer, connection: Database) -> JsonApiResponse:
    row = (
        (await connection.execute(select(accounts).where(accounts.c.id == caller.account_id)))
        .mappings()
        .one()
    )
    return respond(single(account_resource(row)))


@router.patch(
    "/account", response_class=JsonApiResponse, summary="Rename the caller's account (OWNER)"
)
async def update_account(
    body: Document[AccountUpdate], caller: Owner, connection: Database
) -> JsonApiResponse:
    expect_type(body, TYPE, caller.account_id)
    statement = (
        update(accounts)
        .where(accounts.c.id == caller.account_id)
        .values(name=body.data.attributes.name, updated_at=func.now())
        .returning(accounts)
    )
    return respond(single(account_resource((await connection.execute(statement)).mappings().one())))
