"""API keys in the database: issued (the only time a secret is known),
listed and read without their digest, revoked, and the rule that an account
keeps a live key acting as OWNER.

A key acts as its user, with the user's role capped at the role its maker had
when it made it (`max_role`): a key never gains power after it is made, so a
key an ADMIN made for a MEMBER stays below OWNER if that MEMBER is promoted.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from service.accounts import key_secrets
from service.models import ApiKey, Role, User, table
from service.problems import Conflicting
from service.storage import lock_account, one_in_account

api_keys = table(ApiKey)
users = table(User)
# Never selected back out: the digest stays in the database.
PUBLIC = [column for column in api_keys.c if column.name != "secret_hash"]


@dataclass(frozen=True)
class NewKey:
    """A key as issued: its row (without the digest) and its secret, known only now."""

    row: Mapping[Any, Any]
    secret: str


def capped_role(user_role: str, max_role: str | None) -> Role:
    """A key's power, from its row: its user's role, capped at the key's `max_role`."""
    return Role(user_role).capped_at(None if max_role is None else Role(max_role))


async def issue(
    connection: AsyncConnection,
    account_id: uuid.UUID,
    user_id: uuid.UUID,
    name: str,
    *,
    max_role: Role,
    made_by: uuid.UUID | None,
) -> NewKey:
    """Create a key; the only time its secret is known to the service.

    `made_by` is the user who made it (None: the operator), `max_role` the role
    it is capped at: its maker's, now.
    """
    secret = key_secrets.new_key()
    statement = (
        insert(api_keys)
        .values(
            account_id=account_id,
            user_id=user_id,
            name=name,
            prefix=key_secrets.visible_prefix(secret),
            secret_hash=key_secrets.digest(secret),
            max_role=max_role,
            created_by_user_id=made_by,
        )
        .returning(*PUBLIC)
    )
    row = (await connection.execute(statement)).mappings().one()
    return NewKey(row, secret)


def of_account(account_id: uuid.UUID) -> Select[Any]:
    """The account's keys, without their digests (a page of it is the caller's)."""
    return select(*PUBLIC).where(api_keys.c.account_id == account_id)


async def get(
    connection: AsyncConnection, account_id: uuid.UUID, key_id: uuid.UUID
) -> Mapping[Any, Any]:
    return await one_in_account(connection, api_keys, account_id, key_id, PUBLIC)


@dataclass(frozen=True)
class KeyToRevoke:
    """A key about to be revoked, read under the account's lock, and its user's role."""

    row: Mapping[Any, Any]
    user_role: str


async def to_revoke(
    connection: AsyncConnection, account_id: uuid.UUID, key_id: uuid.UUID
) -> KeyToRevoke:
    """The key, under the account's lock (who may act as OWNER must not change
    before `revoke`), for the caller to be checked against its user's role."""
    await lock_account(connection, account_id)
    key = await get(connection, account_id, key_id)
    user_role = str(
        await connection.scalar(select(users.c.role).where(users.c.id == key["user_id"]))
    )
    return KeyToRevoke(key, user_role)


async def revoke(connection: AsyncConnection, account_id: uuid.UUID, key: KeyToRevoke) -> bool:
    """Revoke the key (again is nothing); refused when it is the account's
    last live key acting as OWNER. Whether this revoked it (it was live)."""
    await connection.execute(
        update(api_keys)
        .where(api_keys.c.id == key.row["id"], api_keys.c.revoked_at.is_(None))
        .values(revoked_at=func.now(), updated_at=func.now())
    )
    live = key.row["revoked_at"] is None
    if live and capped_role(key.user_role, key.row["max_role"]) is Role.OWNER:
        await keep_an_owner_key(connection, account_id)
    return live


async def keep_an_owner_key(connection: AsyncConnection, account_id: uuid.UUID) -> None:
    """Conflicting unless a live key still acts as OWNER: without one, nobody
    could act as the account's owner again (only the operator's recovery could)."""
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
        raise Conflicting(
            "the account would have no key left that acts as OWNER; make another OWNER key first",
        )
