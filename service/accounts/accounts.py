"""Accounts in the database: created with their OWNER, default environments
and first key (for the operator's API call and `python -m service accounts
create` alike), read, renamed, and their settings."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import RowMapping, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from service.accounts import callers, environments, keys
from service.accounts.callers import ACCOUNT, AccountRead
from service.accounts.users import NewUser, insert_user
from service.db.driver import Connection, Row
from service.models import Account, Role, table
from service.problems import Invalid, Missing

accounts = table(Account)


@dataclass(frozen=True)
class NewAccount:
    """An account as created: its row, its owner's, its environments' and its
    first key (with the secret, known only now)."""

    account: Mapping[Any, Any]
    owner: Mapping[Any, Any]
    environments: Sequence[Mapping[Any, Any]]
    key: keys.NewKey


async def create(connection: AsyncConnection, name: str, owner: NewUser) -> NewAccount:
    """An account with its OWNER, default environments and first key."""
    if owner.role is not Role.OWNER:
        raise Invalid("the first user of an account is its OWNER", "/data/attributes/owner/role")
    account = (
        (await connection.execute(insert(accounts).values(name=name).returning(accounts)))
        .mappings()
        .one()
    )
    owner_row = await insert_user(connection, account["id"], owner, "/data/attributes/owner")
    created_environments = await environments.create_defaults(connection, account["id"])
    key = await keys.issue(
        connection, account["id"], owner_row["id"], "first key", max_role=Role.OWNER, made_by=None
    )
    return NewAccount(account, owner_row, created_environments, key)


async def exists(connection: AsyncConnection, account_id: uuid.UUID) -> bool:
    found = await connection.scalar(select(accounts.c.id).where(accounts.c.id == account_id))
    return found is not None


# The caller's account, in one statement with the caller's check when a key is
# presented (service/accounts/callers.py).
_ACCOUNT = AccountRead("SELECT * FROM accounts WHERE id = {account}", account=1)


async def read(connection: Connection, account: callers.Account) -> Row:
    """The account (it exists: the caller's key was found in it)."""
    row = await _ACCOUNT.row(connection, account, ACCOUNT)
    if row is None:
        raise Missing("no account")  # a known account's row is never missing
    return row


async def rename(
    connection: AsyncConnection, account_id: uuid.UUID, name: str
) -> Mapping[Any, Any]:
    statement = (
        update(accounts)
        .where(accounts.c.id == account_id)
        .values(name=name, updated_at=func.now())
        .returning(accounts)
    )
    row: RowMapping = (await connection.execute(statement)).mappings().one()
    return row


async def settings(connection: AsyncConnection, account_id: uuid.UUID) -> Any:
    """The account's settings: a JSON object the SDK reads and writes whole."""
    return await connection.scalar(select(accounts.c.settings).where(accounts.c.id == account_id))


async def replace_settings(
    connection: AsyncConnection, account_id: uuid.UUID, settings: Mapping[str, Any]
) -> Any:
    """Store `settings` whole; their environment_order, when given, is a list
    of distinct environment keys (pointers into the object sent)."""
    order = settings.get("environment_order", [])
    if not isinstance(order, list) or not all(isinstance(key, str) for key in order):
        raise Invalid("environment_order must be a list of environment keys", "/environment_order")
    # Keys of environments deleted since stay allowed: the SDK writes back what it read.
    if duplicate := next((key for n, key in enumerate(order) if key in order[:n]), None):
        raise Invalid(f"environment_order names {duplicate!r} twice", "/environment_order")
    return await connection.scalar(
        update(accounts)
        .where(accounts.c.id == account_id)
        .values(settings=settings, updated_at=func.now())
        .returning(accounts.c.settings)
    )
