"""The configs above and below one config, and the rule that an item key has
one type on every config of a parent chain (service/configs/items.py), kept
by writes through either dialect under the account's tree lock."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping

from sqlalchemy import RowMapping, text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.configs.items import (
    ItemType,
    inferred_type,
    matches,
    refuse_chain_disagreements,
    stored_types,
)
from service.limits import MAX_CHAIN_DEPTH
from service.problems import Conflicting

# Each step of these walks is a subquery of its own, run per row of the step
# before (a LATERAL subquery that LIMIT or OFFSET keeps from being merged into
# a join), so it is always a lookup by index. As a join, a plan made while
# the table was small (a prepared statement's generic plan is kept until the
# table is next analyzed) hashed the walk's rows and scanned every config at
# each step: a resolve took 15 ms instead of 0.15 on a table grown to 60,000
# configs, until autovacuum analyzed it (docs/benchmarks/api.notes.md).
#
# The config and its ancestors, the root first, at most :limit of them.
_ANCESTORS = text(
    """
    WITH RECURSIVE chain AS (
        SELECT id, key, parent_id, items, item_definitions, 1 AS level FROM configs
         WHERE id = :id AND account_id = :account_id
        UNION ALL
        SELECT c.id, c.key, c.parent_id, c.items, c.item_definitions, chain.level + 1
          FROM chain CROSS JOIN LATERAL (
              SELECT id, key, parent_id, items, item_definitions FROM configs
               WHERE configs.id = chain.parent_id LIMIT 1
          ) AS c
         WHERE chain.level < :limit
    )
    SELECT id, key, items, item_definitions FROM chain ORDER BY level DESC
    """
)
# Every config under one (not itself), with its depth below it (1: a child).
_DESCENDANTS = text(
    """
    WITH RECURSIVE tree AS (
        SELECT id, key, parent_id, items, item_definitions, environments, 1 AS depth
          FROM configs WHERE parent_id = :id
        UNION ALL
        SELECT c.id, c.key, c.parent_id, c.items, c.item_definitions, c.environments,
               tree.depth + 1
          FROM tree CROSS JOIN LATERAL (
              SELECT id, key, parent_id, items, item_definitions, environments FROM configs
               WHERE configs.parent_id = tree.id OFFSET 0
          ) AS c
         WHERE tree.depth < :limit
    )
    SELECT id, key, parent_id, items, item_definitions, environments, depth FROM tree
    """
)


async def ancestors(
    connection: AsyncConnection, account_id: uuid.UUID, config_id: uuid.UUID
) -> list[RowMapping]:
    """The config and its ancestors, the root first."""
    found = await connection.execute(
        _ANCESTORS, {"id": config_id, "account_id": account_id, "limit": MAX_CHAIN_DEPTH + 1}
    )
    return list(found.mappings())


async def descendants(connection: AsyncConnection, config_id: uuid.UUID) -> list[RowMapping]:
    """Every config under this one, searched no deeper than the chain limit."""
    found = await connection.execute(_DESCENDANTS, {"id": config_id, "limit": MAX_CHAIN_DEPTH})
    return list(found.mappings())


async def relatives(
    connection: AsyncConnection,
    account_id: uuid.UUID,
    config_id: uuid.UUID | None,
    parent_id: uuid.UUID | None,
) -> tuple[list[RowMapping], list[RowMapping]]:
    """The ancestors a config would have under `parent_id` (the root first)
    and the configs below it."""
    chain = await ancestors(connection, account_id, parent_id) if parent_id else []
    subtree = await descendants(connection, config_id) if config_id else []
    return chain, subtree


async def check_chain_types(
    connection: AsyncConnection,
    account_id: uuid.UUID,
    config_id: uuid.UUID | None,
    own: Mapping[str, ItemType],
    chain: list[RowMapping],
    subtree: list[RowMapping],
    at: str,
) -> None:
    """409 unless the config's items (`own`) agree in type with its ancestors
    (`chain`) and with every config below it (`subtree`), and the configs below
    agree with those ancestors (a new parent brings new ones), and their
    overrides still conform (refuse_stranded_overrides)."""
    refuse_chain_disagreements(own, [*chain, *subtree], at)
    above = types_along(chain)
    refuse_chain_disagreements(above, subtree, at)
    if config_id and subtree:
        before = types_along(await ancestors(connection, account_id, config_id))
        refuse_stranded_overrides(config_id, before, {**above, **own}, subtree, at)


def types_along(chain: Iterable[RowMapping]) -> dict[str, ItemType]:
    """The item types a chain of configs (root first) declares together."""
    types: dict[str, ItemType] = {}
    for level in chain:
        types.update(stored_types(level["items"], level["item_definitions"]))
    return types


def refuse_stranded_overrides(
    config_id: uuid.UUID,
    before: Mapping[str, ItemType],
    after: Mapping[str, ItemType],
    subtree: Iterable[RowMapping],
    at: str,
) -> None:
    """409 when a config below would be left overriding an item with a value of
    another type than the item now has, or overriding an item that was declared
    on its chain and no longer is (`before` and `after`: the types the written
    config sees, its own included, before and after the write). Overrides of
    items never declared stay /v1's to allow."""
    below: dict[uuid.UUID, dict[str, ItemType]] = {config_id: {}}
    for row in sorted(subtree, key=lambda row: int(row["depth"])):
        below[row["id"]] = {
            **below.get(row["parent_id"], {}),
            **stored_types(row["items"], row["item_definitions"]),
        }
        declared, declared_before = {**after, **below[row["id"]]}, {**before, **below[row["id"]]}
        for environment, values in (row["environments"] or {}).items():
            for key, value in values.items():
                where = f"config {row['key']!r} overrides item {key!r} in {environment!r}"
                if key in declared and not matches(declared[key], value):
                    raise Conflicting(
                        f"{where} with a {inferred_type(value)}; the item would be a "
                        f"{declared[key]}: change that override first",
                        at,
                    )
                if key not in declared and key in declared_before:
                    raise Conflicting(
                        f"{where}, which would no longer be declared on its chain: remove "
                        "that override first",
                        at,
                    )
