"""The walks up and down a config's chain (a resolve's, and the writes'
checks of ancestors and descendants) look each config up by index in the
plan PostgreSQL keeps for them. A prepared statement's generic plan is made
once and kept until the table is analyzed again; made while the table was
small, the walk as a join hashed its rows and scanned every config at each
step, 100 times slower once the table had grown (service/configs/chains.py).
Checked on a migrated, empty table, the smallest it gets, with the generic
plan forced."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.engine import URL

from service.configs import chains, store
from tests.support.postgres import connect

ACCOUNT = "'00000000-0000-0000-0000-0000000000a1'"
CONFIG = "'00000000-0000-0000-0000-0000000000c1'"


def numbered(sql: str) -> str:
    """SQLAlchemy's :named parameters as PostgreSQL's $1, $2, ... in order of appearance."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return re.sub(r"(?<!:):([a-z_]+)", number, sql)


# name: (the statement, its parameters' types, the values to plan it with)
WALKS = {
    "resolve": (
        store._RESOLVED_CHAIN.plain.sql,
        "uuid, uuid, int, text",
        f"{CONFIG}, {ACCOUNT}, 9, 'x'",
    ),
    "ancestors": (numbered(str(chains._ANCESTORS)), "uuid, uuid, int", f"{CONFIG}, {ACCOUNT}, 9"),
    "descendants": (numbered(str(chains._DESCENDANTS)), "uuid, int", f"{CONFIG}, 9"),
}


def scans(plan: dict[str, Any]) -> Iterator[tuple[str, str | None]]:
    if "Scan" in plan["Node Type"]:
        yield plan["Node Type"], plan.get("Relation Name")
    for child in plan.get("Plans", []):
        yield from scans(child)


@pytest.mark.parametrize("walk", WALKS)
async def test_a_walk_of_a_chain_looks_configs_up_by_index_in_a_generic_plan(
    migrated_database: URL, walk: str
) -> None:
    sql, types, values = WALKS[walk]
    connection = await connect(migrated_database)
    try:
        await connection.execute("SET plan_cache_mode = force_generic_plan")
        await connection.execute(f"PREPARE walk({types}) AS {sql}")
        explained = await connection.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE walk({values})")
    finally:
        await connection.close()
    found = set(scans(json.loads(explained)[0]["Plan"]))
    assert ("Seq Scan", "configs") not in found, found
    assert ("Index Scan", "configs") in found, found
