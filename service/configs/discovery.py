"""Discovery: the configs an SDK's code declares, registered in bulk
(`POST /api/v1/configs/bulk`, service/api/sdk/discovery.py says the rules).

Each declared config that does not exist is created, unmanaged, through the
one create statement (service/configs/store.py), in batches of
DISCOVERY_BATCH configs, each its own transaction under the account's tree
lock; one that exists is never changed."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection

from service.configs.chains import ancestors, types_along
from service.configs.events import MANY_CHANGED, announce
from service.configs.items import ItemType, definitions_of, matches
from service.configs.store import ConfigWrite, configs, insert, lock_tree
from service.limits import MAX_CHAIN_DEPTH
from service.quotas import AccountQuotas, Kind

# Configs registered per transaction: the account's tree lock is held for one
# batch (about 100 round trips), never for a whole request.
DISCOVERY_BATCH = 50
_IDS_BY_KEY = select(configs.c.key, configs.c.id).where(
    configs.c.account_id == bindparam("account_id"),
    configs.c.key.in_(bindparam("keys", expanding=True)),
)


class DeclaredItem(Protocol):
    @property
    def value(self) -> Any: ...
    @property
    def type(self) -> ItemType: ...
    @property
    def description(self) -> str | None: ...


class Declared(Protocol):
    """A config as an SDK declares it: its key is its `id`."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def description(self) -> str | None: ...
    @property
    def parent(self) -> str | None: ...
    @property
    def items(self) -> Mapping[str, DeclaredItem] | None: ...


def display_name(key: str) -> str:
    """The SDK's default name for a key (`smplkit/_helpers.py`)."""
    return key.replace("-", " ").replace("_", " ").title()


async def register(
    connection: AsyncConnection,
    account_id: uuid.UUID,
    declared: Sequence[Declared],
    quotas: AccountQuotas,
) -> int:
    """Create the declared configs that are missing, the first declaration of
    a key winning and parents first; how many were created. Commits each batch
    (the caller's transaction ends first): a batch over the account's quota is
    refused and rolled back, the batches before it stay registered."""
    first: dict[str, tuple[int, Declared]] = {}
    for position, entry in enumerate(declared):
        first.setdefault(entry.id, (position, entry))
    ordered = [entry for _, entry in _parents_first(first)]
    await connection.commit()
    created = 0
    for start in range(0, len(ordered), DISCOVERY_BATCH):
        created_now = await _register(
            connection, account_id, ordered[start : start + DISCOVERY_BATCH]
        )
        if created_now:
            await quotas.hold(connection, account_id, Kind.CONFIGS)
            # One refetch per client and batch rather than a GET per new config.
            await announce(connection, account_id, MANY_CHANGED)
        await connection.commit()
        created += created_now
    return created


def _parents_first(declared: dict[str, tuple[int, Declared]]) -> list[tuple[int, Declared]]:
    """The entries, each after the parent it names when that is declared too
    (by depth within the batch; a cycle is cut where it is found)."""
    depths: dict[str, int] = {}
    for key in declared:
        path: list[str] = []
        while key in declared and key not in depths and key not in path:
            path.append(key)
            key = declared[key][1].parent or ""
        depth = depths.get(key, -1)
        for step in reversed(path):
            depth += 1
            depths[step] = depth
    return sorted(declared.values(), key=lambda item: (depths[item[1].id], item[0]))


async def _register(
    connection: AsyncConnection, account_id: uuid.UUID, batch: Sequence[Declared]
) -> int:
    """Create the batch's missing configs under the account's tree lock; how
    many were created. Parents are read again in each batch: one stored by
    an earlier batch may have been deleted since."""
    await lock_tree(connection, account_id)
    ids = await _stored_ids(connection, account_id, _named_keys(batch))
    created = 0
    for entry in batch:
        if entry.id in ids:
            continue
        parent_id = ids.get(entry.parent) if entry.parent else None
        new_id = await _create(connection, account_id, entry, parent_id)
        if new_id is None:
            ids.update(await _stored_ids(connection, account_id, {entry.id}))
        else:
            ids[entry.id] = new_id
            created += 1
    return created


def _named_keys(entries: Iterable[Declared]) -> set[str]:
    keys: set[str] = set()
    for entry in entries:
        keys.add(entry.id)
        if entry.parent:
            keys.add(entry.parent)
    return keys


async def _stored_ids(
    connection: AsyncConnection, account_id: uuid.UUID, keys: set[str]
) -> dict[str, uuid.UUID]:
    found = await connection.execute(_IDS_BY_KEY, {"account_id": account_id, "keys": sorted(keys)})
    return {row.key: row.id for row in found}


async def _create(
    connection: AsyncConnection,
    account_id: uuid.UUID,
    entry: Declared,
    parent_id: uuid.UUID | None,
) -> uuid.UUID | None:
    """The new config's id; None when another request created it meanwhile.
    A parent too deep is left out."""
    chain = await ancestors(connection, account_id, parent_id) if parent_id else []
    if len(chain) >= MAX_CHAIN_DEPTH:
        parent_id, chain = None, []
    values, types, descriptions = _adapted_items(entry.items or {}, types_along(chain))
    write = ConfigWrite(
        name=entry.name or display_name(entry.id),
        description=entry.description,
        items=values,
        overrides={},
        managed=False,
    )
    row = await insert(
        connection, account_id, entry.id, parent_id, write, definitions_of(types, descriptions)
    )
    return None if row is None else row["id"]


def _adapted_items(
    items: Mapping[str, DeclaredItem], inherited: Mapping[str, ItemType]
) -> tuple[dict[str, Any], dict[str, ItemType], dict[str, str | None]]:
    """Values, types and descriptions of the declared items, adapted to the
    rules: a default that does not match its declared type makes the item
    JSON; an item an ancestor declares takes the ancestor's type when the
    default fits it, and is left out otherwise."""
    values: dict[str, Any] = {}
    types: dict[str, ItemType] = {}
    descriptions: dict[str, str | None] = {}
    for key, item in items.items():
        item_type = inherited.get(key) or (
            item.type if matches(item.type, item.value) else ItemType.JSON
        )
        if not matches(item_type, item.value):
            continue
        values[key], types[key], descriptions[key] = item.value, item_type, item.description
    return values, types, descriptions
