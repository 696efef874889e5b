"""Configs in the database: one account's configs by id or key, their lists,
the one create path, updates, deletes (each announced in its transaction),
and the checks of a config's place in its parent chain (the parent exists,
no cycle, the depth, item types along the chain, overrides), written once for
both API dialects."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import RowMapping, Text, bindparam, func, literal, select
from sqlalchemy import update as update_statement
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from service.accounts.callers import (
    ACCOUNT,
    CALLER,
    KEYED_ORDERS,
    WRITER,
    Account,
    AccountRead,
    KeysetPages,
    NumberedPages,
    PresentedWriter,
    searched_for,
)
from service.configs.chains import check_chain_types, relatives, types_along
from service.configs.events import CHANGED, CHANNEL, DELETED, announce
from service.configs.items import (
    ItemType,
    definitions_of,
    inferred_definitions,
    oversized_items,
    refuse_mismatches,
    refuse_mistyped_overrides,
    refuse_nonconforming_overrides,
    refuse_type_changes,
    stored_types,
    types_of,
)
from service.configs.resolution import resolve
from service.db.driver import Connection, DriverStatement, Row
from service.flags.events import notification
from service.limits import MAX_CHAIN_DEPTH
from service.models import Config, Environment, table
from service.problems import Conflicting, Invalid, Missing, json_pointer
from service.quotas import AccountQuotas, Kind
from service.storage import conflict_from, one_in_account

configs = table(Config)
parents = configs.alias("parent")
environments = table(Environment)
ITEMS_AT = "/data/attributes/items"
OVERRIDES_AT = "/data/attributes/environments"
KEY_TAKEN = "a config with this key already exists"
Sort = Literal[
    "key", "-key", "name", "-name", "created_at", "-created_at", "updated_at", "-updated_at"
]


@dataclass
class Dialect:
    """Where a dialect's documents hold what the rules point at, and how strict
    its overrides are."""

    # The key, where a taken key is refused.
    key_at: str
    # The parent, where a cycle, a chain too deep or (named by key) a missing parent is refused.
    parent_at: str
    # The SDK's overrides name items declared on the chain; /v1's may name any.
    declared_overrides_only: bool
    # The SDK's creates take the account's tree lock even at the root, so they
    # queue with discovery's batches; /v1's take it only under a parent.
    creates_lock_tree: bool = False
    conflicts: dict[str, tuple[str, str]] = field(init=False)

    def __post_init__(self) -> None:
        self.conflicts = {
            "configs_account_id_key_key": (KEY_TAKEN, self.key_at),
            "configs_parent_id_fkey": (
                "the config is the parent of other configs; change or delete them first",
                "/data",
            ),
        }


@dataclass
class ConfigWrite:
    """A create or a whole replace: every writable field of a config."""

    name: str
    description: str | None
    # The items' values by key.
    items: dict[str, Any]
    # Overrides of items by environment key.
    overrides: dict[str, dict[str, Any]]
    # Declared types and descriptions (the SDK's typed items); None: raw values
    # (/v1), each keeping the type it has, a new one the type its value shows.
    types: dict[str, ItemType] | None = None
    descriptions: dict[str, str | None] = field(default_factory=dict)
    # None leaves it as it is (true on a create).
    managed: bool | None = None

    def check(self) -> None:
        """422 for a declared value of another type, or items over the limits."""
        if self.types is None:
            return
        refuse_mismatches(self.types, self.items, ITEMS_AT)
        if problem := oversized_items(self.items, self.descriptions):
            raise Invalid(problem, ITEMS_AT)

    def definitions(self, current: Mapping[Any, Any] | None) -> dict[str, Any]:
        """What `item_definitions` stores, refusing a type changed (409)."""
        if self.types is None:
            previous = current or {"items": {}, "item_definitions": None}
            return inferred_definitions(self.items, previous["items"], previous["item_definitions"])
        if current is not None:
            before = stored_types(current["items"], current["item_definitions"])
            refuse_type_changes(self.types, before, ITEMS_AT)
        return definitions_of(self.types, self.descriptions)


_COLUMNS = ", ".join(column.name for column in configs.c)
# The hot statements run straight on the driver (service/db/driver.py); the
# reads, as one statement with the caller's key check when a key is presented
# (service/accounts/callers.py).
_CONFIG_BY_ID = AccountRead(
    f"SELECT {_COLUMNS} FROM configs WHERE id = $1 AND account_id = {{account}}", account=2
)
# A config by key with its parent's key (the SDK's get).
_CONFIG_BY_KEY = AccountRead(
    "SELECT "
    + ", ".join(f"c.{column.name}" for column in configs.c)
    + ", p.key AS parent_key FROM configs AS c LEFT JOIN configs AS p ON p.id = c.parent_id"
    " WHERE c.account_id = {account} AND c.key = $1",
    account=2,
)
# The config and its ancestors, the root first, at most $3 of them ($1 the
# config's id, $2 its account: a resolve's chain), each row telling whether
# the account has the environment $4. Each step up is a lookup by primary
# key (`LIMIT 1` keeps it a subquery of its own, service/configs/chains.py
# says why).
_RESOLVED_CHAIN = AccountRead(
    """
    WITH RECURSIVE chain AS (
        SELECT id, parent_id, items, environments, 1 AS level FROM configs
         WHERE id = $1 AND account_id = {account}
        UNION ALL
        SELECT c.id, c.parent_id, c.items, c.environments, chain.level + 1
          FROM chain CROSS JOIN LATERAL (
              SELECT id, parent_id, items, environments FROM configs
               WHERE configs.id = chain.parent_id LIMIT 1
          ) AS c
         WHERE chain.level < $3
    )
    SELECT id, parent_id, items, environments, level,
           EXISTS (SELECT FROM environments WHERE account_id = {account} AND key = $4)
               AS environment_known
      FROM chain ORDER BY level DESC
    """,
    account=2,
    order="level DESC",
)
# Every create (both dialects' and discovery's), the JSON values as JSON text;
# a key taken answers no row.
_INSERT_SQL = (
    "INSERT INTO configs (account_id, parent_id, key, name, description, items, environments,"
    " item_definitions, managed) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8::jsonb, $9)"
    " ON CONFLICT ON CONSTRAINT configs_account_id_key_key DO NOTHING"
    f" RETURNING {_COLUMNS}"
)
_INSERT = DriverStatement(_INSERT_SQL)
# An API's create in one statement: the insert, the account's count of
# configs with it (its quota, under the lock the create took before: the
# count's snapshot is the insert's, which does not see the new row, so + 1)
# and the NOTIFY $10 of the change (only when a row was inserted).
_CREATE = DriverStatement(
    f"WITH inserted AS ({_INSERT_SQL}),"
    f" announced AS (SELECT pg_notify('{CHANNEL}', $10) FROM inserted)"
    " SELECT inserted.*, (SELECT count(*) FROM configs WHERE account_id = $1) + 1 AS held,"
    " (SELECT count(*) FROM announced) AS announced"
    " FROM inserted"
)
# A create at the root without overrides, by a presented key, in one
# statement that commits on its own: the caller's check ($1 the key's digest,
# $2 the roles that may create), the quota's advisory lock (the previous
# release's create takes it too), the account's count locked (an upsert
# returns the row's latest committed count, whatever the statement's
# snapshot: the count's triggers keep it, revisions 0016-0017), the insert only when
# the caller may and the count is under the quota $12, and the NOTIFY of the
# change. The locks are held for this statement alone, not to a COMMIT
# round trip later. `held` is the count before the insert: at the quota, no
# row is inserted; under it with no row inserted, the key is taken.
_CREATE_ALONE = DriverStatement(
    f"WITH caller AS ({CALLER.format(digest='$1')}),"
    f" writer AS ({WRITER.format(roles='$2::text[]')}),"
    " locked AS (SELECT pg_advisory_xact_lock($3, hashtext(account_id::text)) FROM writer),"
    " counted AS (INSERT INTO config_counts AS counts (account_id)"
    " SELECT account_id FROM writer, locked"
    " ON CONFLICT (account_id) DO UPDATE SET held = counts.held RETURNING counts.held),"
    " inserted AS (INSERT INTO configs (account_id, parent_id, key, name, description, items,"
    " environments, item_definitions, managed)"
    " SELECT writer.account_id, NULL, $4, $5, $6, $7::jsonb, $8::jsonb, $9::jsonb, $10"
    " FROM writer, counted WHERE counted.held < $12"
    " ON CONFLICT ON CONSTRAINT configs_account_id_key_key DO NOTHING"
    f" RETURNING {_COLUMNS}),"
    f" announced AS (SELECT pg_notify('{CHANNEL}', json_build_object("
    "'account', account_id, 'event', $11::text, 'id', key)::text) FROM inserted)"
    " SELECT caller.*, counted.held AS held_before, inserted.*,"
    " (SELECT count(*) FROM announced) AS announced"
    " FROM caller LEFT JOIN counted ON true LEFT JOIN inserted ON true"
)
# The id deleted; none when a concurrent delete came first.
_DELETE = DriverStatement("DELETE FROM configs WHERE id = $1 RETURNING id")
_WITH_PARENT_KEY = (
    select(configs, parents.c.key.label("parent_key"))
    .select_from(configs.outerjoin(parents, parents.c.id == configs.c.parent_id))
    .where(configs.c.account_id == bindparam("account_id"))
)
_BY_KEY = _WITH_PARENT_KEY.where(configs.c.key == bindparam("key"))
_BY_KEY_LOCKED = _BY_KEY.with_for_update(of=configs)
_ID_BY_KEY = select(configs.c.id).where(
    configs.c.account_id == bindparam("account_id"), configs.c.key == bindparam("key")
)
# Per account: the text hashed is "configs-tree:<account id>".
_TREE_LOCK = select(
    func.pg_advisory_xact_lock(
        func.hashtextextended(
            literal("configs-tree:", Text) + bindparam("account_id", type_=Text), 0
        )
    )
)


def json_text(value: Any) -> str:
    """A JSON value as the text a jsonb parameter is sent."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


# Reads


async def by_id(connection: Connection, account: Account, config_id: uuid.UUID) -> Row:
    """The config with this id in the account (or the presented key's account)."""
    row = await _CONFIG_BY_ID.row(connection, account, config_id, ACCOUNT)
    if row is None:
        raise Missing(f"no config with id {config_id}")
    return row


async def by_key(
    connection: AsyncConnection, account_id: uuid.UUID, key: str, *, lock: bool = False
) -> RowMapping:
    """The config with its parent's key (`parent_key`)."""
    query = _BY_KEY_LOCKED if lock else _BY_KEY
    found = await connection.execute(query, {"account_id": account_id, "key": key})
    row: RowMapping | None = found.mappings().first()
    if row is None:
        raise Missing(f"no config with key {key!r}")
    return row


async def read_by_key(connection: Connection, account: Account, key: str) -> Row:
    """The config with its parent's key (`parent_key`), in one statement."""
    row = await _CONFIG_BY_KEY.row(connection, account, key, ACCOUNT)
    if row is None:
        raise Missing(f"no config with key {key!r}")
    return row


@dataclass(frozen=True)
class Resolved:
    chain: list[Row]
    items: dict[str, Any]


async def resolved(
    connection: Connection, account: Account, config_id: uuid.UUID, environment: str
) -> Resolved:
    """The config's items for an environment, merged along its chain from the
    root: one statement."""
    # One level more than allowed, so a chain built before the limit shows
    # (its root then still has a parent).
    chain = await _RESOLVED_CHAIN.rows(
        connection, account, config_id, ACCOUNT, MAX_CHAIN_DEPTH + 1, environment
    )
    if not chain:
        raise Missing(f"no config with id {config_id}")
    if chain[0]["parent_id"] is not None:
        raise Conflicting(
            f"the config's parent chain is longer than {MAX_CHAIN_DEPTH} levels (it was built "
            "before that limit); re-parent one of its ancestors",
        )
    if not chain[0]["environment_known"]:
        # The view asked for does not exist (as for an unknown config): 404, not
        # 400, since the parameter itself is well formed.
        raise Missing(f"no environment with key {environment!r}", parameter="environment")
    return Resolved(chain, resolve(chain, environment))


# A keyset page of configs (a page of 50 is the heaviest read): by key, and by
# items (JSON text, `@>`: answered by the GIN index configs_items_idx).
PAGES = KeysetPages("configs", _COLUMNS)
_PAGE_BY_KEY = "key = {0}"
_PAGE_BY_ITEMS = "items @> {0}::jsonb"


def page_statement(*, by_key: bool, by_items: bool, after: bool, descending: bool) -> AccountRead:
    """The statement of a keyset page of configs of this shape."""
    conditions = [_PAGE_BY_KEY] * by_key + [_PAGE_BY_ITEMS] * by_items
    return PAGES.statement(conditions, after, descending)


async def keyset_page(
    connection: Connection,
    account: Account,
    size: int,
    after: Sequence[Any] | None,
    descending: bool,
    *,
    key: str | None = None,
    items: dict[str, Any] | None = None,
) -> list[Row]:
    """Configs in (created_at, id) order after a cursor, with this key, or
    whose items contain `items`."""
    where: list[tuple[str, Any]] = []
    if key is not None:
        where.append((_PAGE_BY_KEY, key))
    if items is not None:
        where.append((_PAGE_BY_ITEMS, json_text(items)))
    return await PAGES.page(connection, account, where, size, after, descending)


@dataclass(frozen=True)
class Filters:
    parent: str | None = None
    search: str | None = None
    managed: bool | None = None


# The SDK's list, a page of it one statement (`conditions` its filters).
LISTS = NumberedPages(
    ", ".join(f"c.{column.name}" for column in configs.c) + ", p.key AS parent_key",
    "configs AS c LEFT JOIN configs AS p ON p.id = c.parent_id",
    "c",
    KEYED_ORDERS,
)


def conditions(filters: Filters) -> list[tuple[str, Any]]:
    """The SDK list's filters as `LISTS` takes them."""
    where: list[tuple[str, Any]] = []
    if filters.parent is not None:
        where.append(("p.key = {0}", filters.parent))
    if filters.search is not None:
        where.append((searched_for("c"), filters.search))
    if filters.managed is not None:
        where.append(("c.managed = {0}", filters.managed))
    return where


# Writes


async def lock_tree(connection: AsyncConnection, account_id: uuid.UUID) -> None:
    """Serialise parent changes per account: two concurrent changes could each
    pass the cycle check and close a cycle together."""
    await connection.execute(_TREE_LOCK, {"account_id": str(account_id)})


async def check_environments(
    connection: AsyncConnection, account_id: uuid.UUID, overrides: Mapping[str, Any]
) -> None:
    """404 for an override of an environment the account does not have."""
    if not overrides:
        return
    # FOR KEY SHARE: an environment cannot be deleted (which locks it FOR
    # UPDATE, then counts its overrides) between this check and the commit.
    known = set(
        await connection.scalars(
            select(environments.c.key)
            .where(environments.c.account_id == account_id, environments.c.key.in_(list(overrides)))
            .with_for_update(read=True, key_share=True)
        )
    )
    for key in overrides:
        if key not in known:
            # JSON:API: a request naming a related resource that does not exist is a 404.
            raise Missing(
                f"no environment with key {key!r}",
                OVERRIDES_AT + json_pointer((key,)),
            )


async def insert(
    connection: AsyncConnection,
    account_id: uuid.UUID,
    key: str,
    parent_id: uuid.UUID | None,
    write: ConfigWrite,
    definitions: Mapping[str, Any],
) -> Row | None:
    """Store a new config; None when its key is taken."""
    found = await _INSERT.fetch(
        connection, *_inserted(account_id, key, parent_id, write, definitions)
    )
    return found[0] if found else None


def _inserted(
    account_id: uuid.UUID | None,
    key: str,
    parent_id: uuid.UUID | None,
    write: ConfigWrite,
    definitions: Mapping[str, Any],
) -> tuple[Any, ...]:
    """The parameters of an insert."""
    return (
        account_id,
        parent_id,
        key,
        write.name,
        write.description,
        json_text(write.items),
        json_text(write.overrides),
        json_text(definitions),
        True if write.managed is None else write.managed,
    )


async def create(
    connection: AsyncConnection,
    account_id: uuid.UUID,
    key: str,
    write: ConfigWrite,
    parent: uuid.UUID | str | None,
    dialect: Dialect,
    quotas: AccountQuotas,
) -> Row:
    """Create a config under `parent` (its id, or its key), or at the root."""
    write.check()
    await check_environments(connection, account_id, write.overrides)
    definitions = write.definitions(None)
    own = types_of(definitions)
    if parent is not None or dialect.creates_lock_tree:
        await lock_tree(connection, account_id)
    parent_id = await _parent_id(connection, account_id, parent, dialect)
    await _placed(connection, account_id, None, parent_id, own, write.overrides, dialect)
    await quotas.lock(connection, account_id, Kind.CONFIGS)
    arguments = _inserted(account_id, key, parent_id, write, definitions)
    try:
        row = await _CREATE.fetchrow(connection, *arguments, notification(account_id, CHANGED, key))
    except IntegrityError as error:
        raise conflict_from(error, dialect.conflicts) from None
    if row is None:
        raise Conflicting(KEY_TAKEN, dialect.key_at)
    quotas.check(Kind.CONFIGS, row["held"])
    return row


def creates_alone(parent: uuid.UUID | str | None, write: ConfigWrite, dialect: Dialect) -> bool:
    """Whether a create can be one statement (`create_alone`): at the root,
    without overrides (no environment to check and lock), in a dialect that
    does not lock the account's tree for it."""
    return parent is None and not write.overrides and not dialect.creates_lock_tree


async def create_alone(
    connection: Connection,
    presented: PresentedWriter,
    key: str,
    write: ConfigWrite,
    dialect: Dialect,
    quotas: AccountQuotas,
) -> Row:
    """A create `creates_alone` allows, by a presented key, in one statement;
    it commits on its own on a connection outside any transaction."""
    write.check()
    definitions = write.definitions(None)
    try:
        row = await _CREATE_ALONE.fetchrow(
            connection,
            presented.digest,
            presented.roles,
            quotas.lock_space(Kind.CONFIGS),
            key,
            *_inserted(None, key, None, write, definitions)[3:],
            CHANGED,
            quotas.limits[Kind.CONFIGS],
        )
    except IntegrityError as error:
        raise conflict_from(error, dialect.conflicts) from None
    await presented.admit(row)
    assert row is not None  # admitted: the caller's row was read
    if row["id"] is None:
        quotas.check(Kind.CONFIGS, row["held_before"] + 1)
        raise Conflicting(KEY_TAKEN, dialect.key_at)
    return row


async def update(
    connection: AsyncConnection,
    account_id: uuid.UUID,
    config_id: uuid.UUID,
    changes: dict[str, Any],
    dialect: Dialect,
    *,
    moved: bool = False,
    parent_id: uuid.UUID | None = None,
) -> Mapping[Any, Any]:
    """Change some fields of a config (`changes`: name, description, items,
    environments), and its parent when `moved`."""
    if "environments" in changes:
        await check_environments(connection, account_id, changes["environments"])
    # Items, overrides and parents are checked along the chain, which must hold still.
    touches_chain = moved or "items" in changes or "environments" in changes
    if touches_chain:
        await lock_tree(connection, account_id)
    current = await one_in_account(connection, configs, account_id, config_id, lock=True)
    if "items" in changes:
        changes["item_definitions"] = inferred_definitions(
            changes["items"], current["items"], current["item_definitions"]
        )
    if moved and parent_id is not None:
        await _parent_id(connection, account_id, parent_id, dialect)
    if touches_chain:
        own = stored_types(
            changes.get("items", current["items"]),
            changes.get("item_definitions", current["item_definitions"]),
        )
        await _placed(
            connection,
            account_id,
            config_id,
            parent_id if moved else current["parent_id"],
            own,
            changes.get("environments", current["environments"]),
            dialect,
            moved=moved,
        )
    if moved:
        changes["parent_id"] = parent_id
    if not changes:
        return current
    return await _rewrite(connection, account_id, config_id, changes)


async def replace(
    connection: AsyncConnection,
    account_id: uuid.UUID,
    key: str,
    write: ConfigWrite,
    parent_key: str | None,
    dialect: Dialect,
) -> Mapping[Any, Any]:
    """Replace every writable field of the config with this key."""
    write.check()
    await check_environments(connection, account_id, write.overrides)
    await lock_tree(connection, account_id)
    current = await by_key(connection, account_id, key, lock=True)
    parent_id = await _parent_id(connection, account_id, parent_key, dialect)
    definitions = write.definitions(current)
    await _placed(
        connection,
        account_id,
        current["id"],
        parent_id,
        types_of(definitions),
        write.overrides,
        dialect,
        moved=True,
    )
    changes: dict[str, Any] = {
        "name": write.name,
        "description": write.description,
        "parent_id": parent_id,
        "items": write.items,
        "item_definitions": definitions,
        "environments": write.overrides,
    }
    if write.managed is not None:
        changes["managed"] = write.managed
    return await _rewrite(connection, account_id, current["id"], changes)


async def remove(
    connection: AsyncConnection, account_id: uuid.UUID, current: Mapping[Any, Any], dialect: Dialect
) -> None:
    """Delete a config (read first, by id or key) that is no other config's parent."""
    try:
        deleted = await _DELETE.fetchval(connection, current["id"])
    except IntegrityError as error:
        raise conflict_from(error, dialect.conflicts) from None
    if deleted is None:
        # Deleted by another request since it was read: that one answered 204
        # and announced it.
        raise Missing(f"no config with key {current['key']!r}: another request deleted it")
    await announce(connection, account_id, DELETED, current["key"])


async def _parent_id(
    connection: AsyncConnection,
    account_id: uuid.UUID,
    parent: uuid.UUID | str | None,
    dialect: Dialect,
) -> uuid.UUID | None:
    """The id of the parent named by its id (/v1) or its key (the SDK): 404 for none."""
    if parent is None:
        return None
    if isinstance(parent, uuid.UUID):
        await by_id(connection, account_id, parent)
        return parent
    parent_id: uuid.UUID | None = await connection.scalar(
        _ID_BY_KEY, {"account_id": account_id, "key": parent}
    )
    if parent_id is None:
        # JSON:API: a request naming a related resource that does not exist is a 404.
        raise Missing(f"no config with key {parent!r}", dialect.parent_at)
    return parent_id


async def _placed(
    connection: AsyncConnection,
    account_id: uuid.UUID,
    config_id: uuid.UUID | None,
    parent_id: uuid.UUID | None,
    own: Mapping[str, ItemType],
    overrides: Mapping[str, Mapping[str, Any]],
    dialect: Dialect,
    *,
    moved: bool = True,
) -> None:
    """Check a config's place under `parent_id` (the caller holds the tree
    lock when there is a chain): no cycle and no chain deeper than
    MAX_CHAIN_DEPTH when it moves there, one type per item key along the chain,
    and overrides of values of their items' types."""
    chain, subtree = await relatives(connection, account_id, config_id, parent_id)
    if moved and parent_id is not None:
        if any(level["id"] == config_id for level in chain):
            raise Conflicting(
                "that parent would make a cycle: the config is among its ancestors",
                dialect.parent_at,
            )
        # Moving a config moves its whole subtree.
        height = 1 + max((int(level["depth"]) for level in subtree), default=0)
        if (levels := len(chain) + height) > MAX_CHAIN_DEPTH:
            raise Invalid(
                f"parent chains are limited to {MAX_CHAIN_DEPTH} levels; this parent would "
                f"make {levels}",
                dialect.parent_at,
            )
    await check_chain_types(connection, account_id, config_id, own, chain, subtree, ITEMS_AT)
    chain_types = {**types_along(chain), **own}
    if dialect.declared_overrides_only:
        refuse_nonconforming_overrides(overrides, chain_types, OVERRIDES_AT)
    else:
        refuse_mistyped_overrides(overrides, chain_types, OVERRIDES_AT)


async def _rewrite(
    connection: AsyncConnection,
    account_id: uuid.UUID,
    config_id: uuid.UUID,
    changes: dict[str, Any],
) -> RowMapping:
    statement = (
        update_statement(configs)
        .where(configs.c.id == config_id)
        .values(**changes, updated_at=func.now())
        .returning(configs)
    )
    row: RowMapping = (await connection.execute(statement)).mappings().one()
    await announce(connection, account_id, CHANGED, row["key"])
    return row
