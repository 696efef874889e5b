"""Revision 0012 on 2,500 configs: item types inferred in batches, existing
configs managed; and back."""

from __future__ import annotations

import json
import math

import pytest
from sqlalchemy.engine import URL

from tests.support.postgres import connect
from tests.support.processes import run_python

# Every test here starts a real process or server.
pytestmark = pytest.mark.processes

BEFORE = "0011_key_caps_backfill"
CONFIGS = 2_500
BATCH = 1_000

# Every kind of JSON value in the items of two configs out of three; the
# third has none.
SEED = f"""
WITH account AS (INSERT INTO accounts (name) VALUES ('Seed') RETURNING id)
INSERT INTO configs (account_id, key, name, items)
SELECT account.id, 'config-' || i, 'Config ' || i,
       CASE WHEN i % 3 = 0 THEN '{{}}'::jsonb ELSE jsonb_build_object(
           'text', 'value ' || i, 'count', i, 'ratio', i / 7.0, 'on', i % 2 = 0,
           'object', jsonb_build_object('nested', i), 'list', jsonb_build_array(i),
           'nothing', NULL) END
  FROM account, generate_series(1, {CONFIGS}) AS i
"""
EXPECTED_TYPES = {
    "text": "STRING",
    "count": "NUMBER",
    "ratio": "NUMBER",
    "on": "BOOLEAN",
    "object": "JSON",
    "list": "JSON",
    "nothing": "JSON",
}


def run(*arguments: str, url: URL) -> None:
    result = run_python(*arguments, url=url, timeout=600, BACKFILL_BATCH_SIZE=str(BATCH))
    assert result.returncode == 0, result.stderr[-3000:]


async def test_item_types_are_inferred_in_batches_and_dropped_on_downgrade(
    empty_database: URL,
) -> None:
    run("-m", "alembic", "upgrade", BEFORE, url=empty_database)
    connection = await connect(empty_database)
    await connection.execute(SEED)
    await connection.close()

    run("-m", "service", "migrate", url=empty_database)
    connection = await connect(empty_database)
    rows = await connection.fetch("SELECT items, item_definitions, managed FROM configs")
    assert len(rows) == CONFIGS
    for row in rows:
        items, definitions = json.loads(row["items"]), json.loads(row["item_definitions"])
        assert definitions == {key: {"type": EXPECTED_TYPES[key]} for key in items}, row
        assert row["managed"] is True
    # Batches, each its own transaction: one transaction id per batch.
    transactions = await connection.fetchval("SELECT count(DISTINCT xmin::text) FROM configs")
    assert transactions == math.ceil(CONFIGS / BATCH)
    await connection.close()

    run("-m", "alembic", "downgrade", BEFORE, url=empty_database)
    connection = await connect(empty_database)
    columns = {
        row["column_name"]
        for row in await connection.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'configs'"
        )
    }
    assert {"item_definitions", "managed"}.isdisjoint(columns)
    assert await connection.fetchval("SELECT count(*) FROM configs") == CONFIGS
    await connection.close()
