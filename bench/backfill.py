"""5. Backfill: the cognito_sub data migration (revision 0006, batches of
BACKFILL_BATCH_SIZE = 5,000 rows, each its own transaction) on 1,000,000 users,
timed inside a process that has already imported Alembic, against a single
set-based UPDATE of the same rows with the same expressions in one
transaction. Each run starts from a fresh copy of a database at 0005 holding
the users.

During each run a concurrent writer updates random users, one statement at a
time (autocommit, as API requests would); the longest any of its statements
took is an upper bound of the time it waited for a row lock.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import time
from typing import Any

import asyncpg
from sqlalchemy.engine import URL

from bench.harness import (
    PYTHON,
    ROOT,
    create_database,
    drop_database,
    environment,
    plain,
    run,
    summary,
    target,
)

USERS = 1_000_000
EXPAND = "0005_auth_identity_expand"
BACKFILL = "0006_auth_identity_backfill"
REVISION_TIMER = """
import sys, time
from alembic import command
from alembic.config import Config
config = Config("alembic.ini")
started = time.perf_counter()
command.upgrade(config, sys.argv[1])
print(time.perf_counter() - started)
"""
SINGLE_UPDATE = """
UPDATE users AS u
   SET auth_provider = CASE WHEN NULLIF(btrim(u.cognito_sub), '') IS NOT NULL THEN 'cognito' ELSE 'email' END,
       auth_subject = CASE WHEN NULLIF(btrim(u.cognito_sub), '') IS NOT NULL THEN u.cognito_sub ELSE lower(u.email) END
 WHERE u.auth_provider IS NULL
"""
WRITE = "UPDATE users SET role = CASE role WHEN 'MEMBER' THEN 'VIEWER' ELSE 'MEMBER' END, updated_at = now() WHERE id = $1"


async def _writer(url: URL, ids: list[str], stop: asyncio.Event) -> list[float]:
    connection = await asyncpg.connect(plain(url))
    durations = []
    chance = random.Random(7)
    try:
        while not stop.is_set():
            started = time.perf_counter()
            await connection.execute(WRITE, chance.choice(ids))
            durations.append(time.perf_counter() - started)
            await asyncio.sleep(0.002)
    finally:
        await connection.close()
    return durations


async def _with_writer(url: URL, work: Any) -> tuple[float, list[float]]:
    connection = await asyncpg.connect(plain(url))
    ids = [
        str(row["id"])
        for row in await connection.fetch("SELECT id FROM users TABLESAMPLE SYSTEM (2)")
    ]
    await connection.close()
    stop = asyncio.Event()
    writer = asyncio.create_task(_writer(url, ids, stop))
    await asyncio.sleep(0.5)
    try:
        seconds = await work()
    finally:
        stop.set()
    return seconds, await writer


def _batched(url: URL) -> Any:
    async def work() -> float:
        result = await asyncio.create_subprocess_exec(
            PYTHON, "-c", REVISION_TIMER, BACKFILL, cwd=ROOT, env=environment(url),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        output, errors = await result.communicate()
        if result.returncode != 0:
            raise RuntimeError(errors.decode()[-3000:])
        return float(output.decode().strip().splitlines()[-1])

    return work


def _single(url: URL) -> Any:
    async def work() -> float:
        connection = await asyncpg.connect(plain(url))
        try:
            started = time.perf_counter()
            await connection.execute(SINGLE_UPDATE)
            return time.perf_counter() - started
        finally:
            await connection.close()

    return work


def benchmark(admin: URL, repeat: int) -> dict[str, Any]:
    from tests.support.seeds import BEFORE_IDENTITY, seed_users_sql

    template = create_database(admin)
    runs: dict[str, list[float]] = {"batched revision 0006": [], "single UPDATE": []}
    waits: dict[str, list[float]] = {"batched revision 0006": [], "single UPDATE": []}
    try:
        run([PYTHON, "-m", "alembic", "upgrade", BEFORE_IDENTITY], environment(template))
        asyncio.run(_seed(template, seed_users_sql(USERS)))
        run([PYTHON, "-m", "alembic", "upgrade", EXPAND], environment(template))
        for _ in range(repeat):
            for name, make in (("batched revision 0006", _batched), ("single UPDATE", _single)):
                url = create_database(admin, template=template.database)
                try:
                    seconds, writes = asyncio.run(_with_writer(url, make(url)))
                    left = asyncio.run(_count_missing(url))
                    if left:
                        raise RuntimeError(f"{name} left {left} users without a provider")
                finally:
                    drop_database(admin, url)
                runs[name].append(USERS / seconds)
                waits[name].append(max(writes))
    finally:
        drop_database(admin, template)
    results = {
        name: {
            "rows_per_second": summary(values, 0),
            "writer_longest_statement_s": summary(waits[name], 3),
        }
        for name, values in runs.items()
    }
    speed = round(
        results["batched revision 0006"]["rows_per_second"]["median"]
        / results["single UPDATE"]["rows_per_second"]["median"],
        3,
    )
    worst_wait = max(waits["batched revision 0006"])
    return {
        "title": "Backfill of 1,000,000 users",
        "method": __doc__,
        "unit": "rows per second; seconds",
        "results": results,
        "targets": [
            target("rows/s, batched revision / single UPDATE", speed, 0.5, "at least"),
            target(
                "longest writer statement during the batched backfill (s)",
                round(worst_wait, 3),
                1.0,
                "at most",
            ),
        ],
    }


async def _seed(url: URL, sql: str) -> None:
    connection = await asyncpg.connect(plain(url))
    try:
        await connection.execute(sql)
        await connection.execute("VACUUM ANALYZE users")
    finally:
        await connection.close()


async def _count_missing(url: URL) -> int:
    connection = await asyncpg.connect(plain(url))
    try:
        return int(
            await connection.fetchval("SELECT count(*) FROM users WHERE auth_provider IS NULL")
        )
    finally:
        await connection.close()
