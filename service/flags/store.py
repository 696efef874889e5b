"""Flags in the database: one account's flags by key, their writes (each
announced in its transaction) and discovery's declarations and sources."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import RowMapping, Select, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as upsert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from service.accounts.callers import (
    ACCOUNT,
    KEYED_ORDERS,
    Account,
    AccountRead,
    KeysetPages,
    NumberedPages,
    searched_for,
)
from service.db.driver import Connection, Row
from service.flags.definitions import FlagDefinition, FlagType, check_environments_exist, matches
from service.flags.events import FLAG_CHANGED, FLAG_DELETED, FLAGS_CHANGED, announce
from service.models import Flag, FlagSource, table
from service.problems import Conflicting, Missing

flags = table(Flag)
sources = table(FlagSource)
ATTRIBUTES = "/data/attributes"
Sort = Literal[
    "key", "-key", "name", "-name", "type", "-type",
    "created_at", "-created_at", "updated_at", "-updated_at",
]  # fmt: skip
SourceSort = Literal[
    "service", "-service", "environment", "-environment",
    "created_at", "-created_at", "last_seen", "-last_seen",
]  # fmt: skip


@dataclass
class FlagWrite:
    """A create or a replace: every writable field of a flag."""

    name: str
    description: str | None
    definition: FlagDefinition
    # None leaves it as it is (true on a create).
    managed: bool | None = None


@dataclass(frozen=True)
class Filters:
    flag_type: FlagType | None = None
    managed: bool | None = None
    search: str | None = None


def attributes(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A stored flag's fields, named as the SDK's `Flag` model names them."""
    return {
        "name": row["name"],
        "description": row["description"],
        "type": row["type"],
        "default": row["default"],
        "values": row["allowed_values"],
        "environments": row["environments"],
        "managed": row["managed"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


async def get(
    connection: AsyncConnection, account_id: uuid.UUID, key: str, *, lock: bool = False
) -> RowMapping:
    query = select(flags).where(flags.c.account_id == account_id, flags.c.key == key)
    if lock:
        query = query.with_for_update()
    row: RowMapping | None = (await connection.execute(query)).mappings().first()
    if row is None:
        raise Missing(f"no flag with key {key!r}")
    return row


# A flag by key (the SDK's get), in one statement with the caller's check when
# a key is presented (service/accounts/callers.py); by id, /v1's, is
# service/storage.py's `read_in_account`.
_BY_KEY = AccountRead("SELECT * FROM flags WHERE account_id = {account} AND key = $1", account=2)


async def read_by_key(connection: Connection, account: Account, key: str) -> Row:
    row = await _BY_KEY.row(connection, account, key, ACCOUNT)
    if row is None:
        raise Missing(f"no flag with key {key!r}")
    return row


# The SDK's list, a page of it one statement (`conditions` its filters).
LISTS = NumberedPages("f.*", "flags AS f", "f", {**KEYED_ORDERS, "type": "type"})


def conditions(filters: Filters) -> list[tuple[str, Any]]:
    """The SDK list's filters as `LISTS` takes them."""
    where: list[tuple[str, Any]] = []
    if filters.flag_type is not None:
        where.append(("f.type = {0}", filters.flag_type.value))
    if filters.managed is not None:
        where.append(("f.managed = {0}", filters.managed))
    if filters.search is not None:
        where.append((searched_for("f"), filters.search))
    return where


async def _checked(connection: AsyncConnection, account_id: uuid.UUID, write: FlagWrite) -> None:
    write.definition.check(ATTRIBUTES)
    await check_environments_exist(
        connection, account_id, write.definition.environments, ATTRIBUTES
    )


def _stored(write: FlagWrite) -> dict[str, Any]:
    definition = write.definition
    return {
        "name": write.name,
        "description": write.description,
        "type": definition.type.value,
        "default": definition.default,
        "allowed_values": definition.allowed_values,
        "environments": definition.environments,
    }


async def create(
    connection: AsyncConnection, account_id: uuid.UUID, key: str, write: FlagWrite
) -> RowMapping:
    await _checked(connection, account_id, write)
    statement = (
        insert(flags)
        .values(
            account_id=account_id,
            key=key,
            managed=True if write.managed is None else write.managed,
            **_stored(write),
        )
        .returning(flags)
    )
    try:
        row: RowMapping = (await connection.execute(statement)).mappings().one()
    except IntegrityError:
        raise Conflicting("a flag with this key already exists", "/data/id") from None
    await announce(connection, account_id, FLAG_CHANGED, key)
    return row


async def replace(
    connection: AsyncConnection, account_id: uuid.UUID, key: str, write: FlagWrite
) -> RowMapping:
    current = await get(connection, account_id, key, lock=True)
    # Checked first: the values of another type would be refused as well, but
    # the conflict is the type.
    if current["type"] != write.definition.type.value:
        raise Conflicting(
            f"the flag is {current['type']}; a flag's type never changes once set",
            f"{ATTRIBUTES}/type",
        )
    await _checked(connection, account_id, write)
    changes = _stored(write)
    if write.managed is not None:
        changes["managed"] = write.managed
    statement = (
        update(flags)
        .where(flags.c.id == current["id"])
        .values(**changes, updated_at=func.now())
        .returning(flags)
    )
    row: RowMapping = (await connection.execute(statement)).mappings().one()
    await announce(connection, account_id, FLAG_CHANGED, key)
    return row


async def remove(connection: AsyncConnection, account_id: uuid.UUID, key: str) -> None:
    deleted = await connection.scalar(
        delete(flags)
        .where(flags.c.account_id == account_id, flags.c.key == key)
        .returning(flags.c.id)
    )
    if deleted is None:
        raise Missing(f"no flag with key {key!r}")
    await announce(connection, account_id, FLAG_DELETED, key)


async def targeting(connection: AsyncConnection, account_id: uuid.UUID, environment: str) -> int:
    """How many of the account's flags hold settings (enabled, default, rules)
    for an environment: a deleted environment must not leave them behind, to
    fail the flag's next write and come back to life with a new environment
    of the same key."""
    found = await connection.scalar(
        select(func.count()).where(
            flags.c.account_id == account_id, flags.c.environments.has_key(environment)
        )
    )
    return int(found or 0)


async def forget_environment(
    connection: AsyncConnection, account_id: uuid.UUID, environment: str
) -> None:
    """Remove an environment's settings from every flag of the account (the
    environment is being deleted with cascade)."""
    changed = await connection.execute(
        update(flags)
        .where(flags.c.account_id == account_id, flags.c.environments.has_key(environment))
        .values(environments=flags.c.environments.op("-")(environment), updated_at=func.now())
    )
    if changed.rowcount:
        await announce(connection, account_id, FLAGS_CHANGED)


@dataclass(frozen=True)
class Declaration:
    """A flag an SDK's code declares (discovery), from one service and environment."""

    key: str
    type: FlagType
    default: Any
    service: str
    environment: str

    def problem(self) -> str | None:
        if not matches(self.type, self.default):
            return f"the default is not a value of a {self.type} flag"
        return None


async def discover(
    connection: AsyncConnection, account_id: uuid.UUID, declared: Sequence[Declaration]
) -> int:
    """Create each declared flag that does not exist (unmanaged, as declared),
    never change one that does, and record (or refresh) each declaration's
    source. Returns how many declarations were recorded."""
    created = 0
    # In key order: concurrent batches lock the same rows in the same order.
    for declaration in sorted(declared, key=lambda entry: entry.key):
        flag_id = await connection.scalar(
            upsert(flags)
            .values(
                account_id=account_id,
                key=declaration.key,
                name=declaration.key,
                type=declaration.type.value,
                default=declaration.default,
                environments={},
                managed=False,
            )
            .on_conflict_do_nothing(constraint="flags_account_id_key_key")
            .returning(flags.c.id)
        )
        if flag_id is None:
            flag_id = (await get(connection, account_id, declaration.key))["id"]
        else:
            created += 1
        statement = upsert(sources).values(
            flag_id=flag_id,
            service=declaration.service,
            environment=declaration.environment,
            declared_type=declaration.type.value,
            declared_default=declaration.default,
        )
        await connection.execute(
            statement.on_conflict_do_update(
                constraint="flag_sources_flag_id_service_environment_key",
                set_={
                    "declared_type": statement.excluded.declared_type,
                    "declared_default": statement.excluded.declared_default,
                    "last_seen": func.now(),
                },
            )
        )
    if created:
        await announce(connection, account_id, FLAGS_CHANGED)
    return len(declared)


_SOURCE_SORTS = {
    "service": sources.c.service.collate("C"),
    "environment": sources.c.environment.collate("C"),
    "created_at": sources.c.first_observed,
    "last_seen": sources.c.last_seen,
}


def sources_of(account_id: uuid.UUID, key: str | None, sort: SourceSort) -> Select[Any]:
    """The sources of one flag, or of all the account's flags, in a total order."""
    query = (
        select(sources, flags.c.key.label("flag_key"))
        .join(flags, flags.c.id == sources.c.flag_id)
        .where(flags.c.account_id == account_id)
    )
    if key is not None:
        query = query.where(flags.c.key == key)
    column = _SOURCE_SORTS[sort.removeprefix("-")]
    return query.order_by(
        column.desc() if sort.startswith("-") else column,
        flags.c.key.collate("C"),
        sources.c.service.collate("C"),
        sources.c.environment.collate("C"),
    )


async def key_of(connection: AsyncConnection, account_id: uuid.UUID, flag_id: uuid.UUID) -> str:
    """The key of the account's flag with this id (the /v1 API names flags by id)."""
    key: str | None = await connection.scalar(
        select(flags.c.key).where(flags.c.account_id == account_id, flags.c.id == flag_id)
    )
    if key is None:
        raise Missing(f"no flag with id {flag_id}")
    return key


# The /v1 list of flags, a page one statement with the caller's check.
PAGES = KeysetPages("flags")


async def keyset_page(
    connection: Connection,
    account: Account,
    size: int,
    after: Sequence[Any] | None,
    descending: bool,
) -> list[Row]:
    """A page in (created_at, id) order after a cursor: stable while flags are added."""
    return await PAGES.page(connection, account, (), size, after, descending)
