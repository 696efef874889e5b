"""Users in the database: inserted (their auth_subject by default the
lower-cased email), changed and removed, never leaving the account without
an OWNER or without a live key that acts as OWNER.

Who may change or remove whom is the door's to check (a caller's role is
HTTP's notion of authorisation): `locked` reads a user under the account's
lock for that check, then `change` or `remove` write.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import RowMapping, Select, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from service.accounts.callers import Account, KeysetPages
from service.accounts.keys import api_keys, keep_an_owner_key
from service.db.driver import Connection, Row
from service.models import Role, User, table
from service.problems import Conflicting, Invalid
from service.storage import conflict_from, lock_account, one_in_account

users = table(User)
SUBJECT_LENGTH = 255
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


@dataclass(frozen=True)
class NewUser:
    """A user to insert, its values already of their shapes."""

    email: str
    role: Role = Role.MEMBER
    auth_provider: str = "email"
    auth_subject: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    def subject(self, pointer: str) -> str:
        """The auth_subject, by default the lower-cased email, which must fit its
        column: lower-casing may lengthen a string ("İ" becomes two characters)."""
        if self.auth_subject is not None:
            return self.auth_subject
        subject = self.email.lower()
        if len(subject) > SUBJECT_LENGTH:
            raise Invalid(
                f"the lower-cased email is the user's auth_subject, of at most {SUBJECT_LENGTH} "
                "characters: give a shorter auth_subject",
                f"{pointer}/email",
            )
        return subject


async def insert_user(
    connection: AsyncConnection, account_id: uuid.UUID, values: NewUser, pointer: str
) -> Mapping[Any, Any]:
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
        row: RowMapping = (await connection.execute(statement)).mappings().one()
        return row
    except IntegrityError as error:
        raise conflict_from(error, CONFLICTS) from None


def of_account(
    account_id: uuid.UUID, email: str | None = None, role: Role | None = None
) -> Select[Any]:
    """The account's users, of that email (any case) and role when given."""
    query = select(users).where(users.c.account_id == account_id)
    if email is not None:
        query = query.where(func.lower(users.c.email) == func.lower(email))
    if role is not None:
        query = query.where(users.c.role == role)
    return query


# The /v1 list of users, a page one statement with the caller's check. Emails
# compared lower-cased by PostgreSQL on both sides, as `of_account` compares them.
PAGES = KeysetPages("users")
_PAGE_BY_EMAIL = "lower(email) = lower({0})"
_PAGE_BY_ROLE = "role = {0}"


async def page(
    connection: Connection,
    account: Account,
    size: int,
    after: Sequence[Any] | None,
    descending: bool,
    *,
    email: str | None = None,
    role: Role | None = None,
) -> list[Row]:
    """The account's users in (created_at, id) order after a cursor, of that
    email (any case) and role when given."""
    where: list[tuple[str, Any]] = []
    if email is not None:
        where.append((_PAGE_BY_EMAIL, email))
    if role is not None:
        where.append((_PAGE_BY_ROLE, role.value))
    return await PAGES.page(connection, account, where, size, after, descending)


async def get(
    connection: AsyncConnection, account_id: uuid.UUID, user_id: uuid.UUID
) -> Mapping[Any, Any]:
    return await one_in_account(connection, users, account_id, user_id)


async def locked(
    connection: AsyncConnection, account_id: uuid.UUID, user_id: uuid.UUID
) -> Mapping[Any, Any]:
    """The user, under the account's lock: who may act as OWNER stays as read
    until this transaction ends, so two requests cannot both pass the
    last-owner checks of `change` and `remove`."""
    await lock_account(connection, account_id)
    return await get(connection, account_id, user_id)


async def change(
    connection: AsyncConnection,
    account_id: uuid.UUID,
    current: Mapping[Any, Any],
    changes: Mapping[str, Any],
) -> Mapping[Any, Any]:
    """Write `changes` (of email, role, attributes) to the user read by
    `locked`; the last OWNER is not demoted, nor the last OWNER key lost."""
    demoted_owner = current["role"] == Role.OWNER and changes.get("role", Role.OWNER) != Role.OWNER
    if demoted_owner:
        await _keep_an_owner(connection, account_id)
    if not changes:
        return current
    statement = (
        update(users)
        .where(users.c.id == current["id"])
        .values(**changes, updated_at=func.now())
        .returning(users)
    )
    try:
        row: RowMapping = (await connection.execute(statement)).mappings().one()
    except IntegrityError as error:
        raise conflict_from(error, CONFLICTS) from None
    if demoted_owner:
        await keep_an_owner_key(connection, account_id)
    return row


async def remove(
    connection: AsyncConnection, account_id: uuid.UUID, current: Mapping[Any, Any]
) -> Sequence[uuid.UUID]:
    """Delete the user read by `locked`, and so their keys (not the last
    OWNER, nor the last OWNER key); the ids of the keys that were live."""
    is_owner = current["role"] == Role.OWNER
    if is_owner:
        await _keep_an_owner(connection, account_id)
    live_keys = await connection.scalars(
        select(api_keys.c.id).where(
            api_keys.c.user_id == current["id"], api_keys.c.revoked_at.is_(None)
        )
    )
    await connection.execute(delete(users).where(users.c.id == current["id"]))
    if is_owner:
        await keep_an_owner_key(connection, account_id)
    return list(live_keys)


async def _keep_an_owner(connection: AsyncConnection, account_id: uuid.UUID) -> None:
    owners = await connection.scalar(
        select(func.count()).where(users.c.account_id == account_id, users.c.role == Role.OWNER)
    )
    if (owners or 0) <= 1:
        raise Conflicting(
            "the account's last owner cannot be removed or demoted", "/data/attributes/role"
        )
