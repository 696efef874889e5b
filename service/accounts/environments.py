"""Environments in the database: the defaults of a new account, created
(within the account's quota), changed, and deleted: never one that configs
override or flags target, unless the delete cascades and forgets them.

Both dialects address the same rows, /v1 by id and the SDK's by key.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sqlalchemy import RowMapping, Select, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from service.flags import store as flag_store
from service.models import Config, Environment, table
from service.problems import Conflicting, Missing
from service.quotas import AccountQuotas, Kind
from service.storage import conflict_from, one_in_account, searched

environments = table(Environment)
configs = table(Config)
KEY_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"
# #rgb, #rrggbb or #rrggbbaa: the SDK's dialect sends all three, and what one
# dialect stored the other must take back.
COLOR_PATTERN = r"^#([0-9a-fA-F]{3}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})$"
DEFAULTS = (
    ("development", "Development", "#2e7d32"),
    ("staging", "Staging", "#f9a825"),
    ("production", "Production", "#c62828"),
)


async def create_defaults(
    connection: AsyncConnection, account_id: uuid.UUID
) -> list[Mapping[Any, Any]]:
    """A new account's environments, in this order."""
    statement = (
        insert(environments)
        .values(
            [
                {
                    "account_id": account_id,
                    "key": key,
                    "name": name,
                    "color": color,
                    "position": position,
                }
                for position, (key, name, color) in enumerate(DEFAULTS)
            ]
        )
        .returning(environments)
    )
    return list((await connection.execute(statement)).mappings().all())


async def create(
    connection: AsyncConnection,
    quotas: AccountQuotas,
    account_id: uuid.UUID,
    values: Mapping[str, Any],
    conflicts: Mapping[str, tuple[str, str]],
) -> Mapping[Any, Any]:
    """Insert an environment (`conflicts`: the door's words and pointer for a
    key taken), within the account's quota."""
    statement = insert(environments).values(account_id=account_id, **values).returning(environments)
    try:
        row: RowMapping = (await connection.execute(statement)).mappings().one()
    except IntegrityError as error:
        raise conflict_from(error, conflicts) from None
    await quotas.hold(connection, account_id, Kind.ENVIRONMENTS)
    return row


def of_account(
    account_id: uuid.UUID,
    *,
    search: str | None = None,
    classification: str | None = None,
    managed: bool | None = None,
) -> Select[Any]:
    """The account's environments; with `search`, those whose key or name
    holds it (any case), and of that classification and managed when given."""
    query = select(environments).where(environments.c.account_id == account_id)
    if search is not None:
        query = searched(query, environments, search)
    if classification is not None:
        query = query.where(environments.c.classification == classification)
    if managed is not None:
        query = query.where(environments.c.managed == managed)
    return query


async def get(
    connection: AsyncConnection,
    account_id: uuid.UUID,
    environment_id: uuid.UUID,
    *,
    lock: bool = False,
) -> Mapping[Any, Any]:
    return await one_in_account(connection, environments, account_id, environment_id, lock=lock)


async def by_key(
    connection: AsyncConnection, account_id: uuid.UUID, key: str, *, lock: bool = False
) -> RowMapping:
    query = select(environments).where(
        environments.c.account_id == account_id, environments.c.key == key
    )
    if lock:
        query = query.with_for_update()
    row: RowMapping | None = (await connection.execute(query)).mappings().first()
    if row is None:
        raise Missing(f"no environment with key {key!r}")
    return row


async def change(
    connection: AsyncConnection, environment_id: uuid.UUID, changes: Mapping[str, Any]
) -> Mapping[Any, Any]:
    """Write `changes` to an environment read in this transaction."""
    statement = (
        update(environments)
        .where(environments.c.id == environment_id)
        .values(**changes, updated_at=func.now())
        .returning(environments)
    )
    row: RowMapping = (await connection.execute(statement)).mappings().one()
    return row


async def delete_unused(
    connection: AsyncConnection, account_id: uuid.UUID, current: Mapping[Any, Any], hint: str = ""
) -> None:
    """Delete an environment read (locked) in this transaction; Conflicting
    while configs override it or flags target it (`hint` ends the detail)."""
    key = current["key"]
    if in_use := await connection.scalar(select(func.count()).where(*_overriding(account_id, key))):
        raise Conflicting(
            f"{in_use} config(s) have overrides for the environment {key!r}; remove them first{hint}"
        )
    if targeted := await flag_store.targeting(connection, account_id, key):
        raise Conflicting(
            f"{targeted} flag(s) have settings for the environment {key!r}; remove them first{hint}"
        )
    await connection.execute(delete(environments).where(environments.c.id == current["id"]))


async def delete_cascading(
    connection: AsyncConnection,
    account_id: uuid.UUID,
    current: Mapping[Any, Any],
    configs_changed: Callable[[], Awaitable[None]],
) -> None:
    """Delete an environment read (locked) in this transaction with the
    configs' overrides and flags' settings for it; `configs_changed` announces
    that configs changed (when some did), before the flags' own announcement."""
    key = current["key"]
    changed = await connection.execute(
        update(configs)
        .where(*_overriding(account_id, key))
        .values(environments=_without(configs.c.environments, key), updated_at=func.now())
    )
    if changed.rowcount:
        await configs_changed()
    await flag_store.forget_environment(connection, account_id, key)
    await connection.execute(delete(environments).where(environments.c.id == current["id"]))


def _overriding(account_id: uuid.UUID, key: str) -> tuple[Any, ...]:
    return (configs.c.account_id == account_id, configs.c.environments.has_key(key))


def _without(document: Any, key: str) -> Any:
    """jsonb `-`: the object without that key (SQLAlchemy's JSONB has no operator for it)."""
    return document.op("-", return_type=JSONB)(key)
