"""A fleet whose migrator is killed (SIGKILL) at a random moment of a
multi-revision upgrade, ten times: each time the lock is freed, no revision is
half-applied, the rest of the fleet reaches head, and the schema, the data and
the audit trail are exactly what a clean run leaves.

Four runs start on an empty database and kill at a random moment of the whole
upgrade. Six start on a database at the last revision before the identity
migration, holding users: two kill in the middle of the batched backfill
(revision 0006, inside its autocommit block), two while CREATE INDEX
CONCURRENTLY runs (revision 0007, inside its autocommit block), two at a random
moment. The seed of the random choices is printed, so a failure can be replayed
with KILL_SEED.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import URL

from tests.support.postgres import connect, create_database, drop_database, service_url
from tests.support.processes import ServiceProcess, run_python, service_environment
from tests.support.revisions import HEAD
from tests.support.schema import snapshot
from tests.support.seeds import BEFORE_IDENTITY, seed_users_sql

# Every test here starts a real process or server.
pytestmark = pytest.mark.processes

USERS = 60_000
BATCH = "1000"
FLEET = 3
SEED = int(os.environ.get("KILL_SEED", str(random.SystemRandom().randrange(1 << 30))))
print(f"random-kill seed: KILL_SEED={SEED}")

HOLDER = """
SELECT a.pid AS backend, a.application_name, a.query, a.state
  FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.granted
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


@dataclass(frozen=True)
class Start:
    name: str
    template: str
    clean_snapshot: dict[str, object]
    clean_seconds: float


def start_fleet(url: URL, folder: Path, size: int) -> list[ServiceProcess]:
    environment = service_environment(DATABASE_URL=service_url(url), BACKFILL_BATCH_SIZE=BATCH)
    folder.mkdir(parents=True, exist_ok=True)
    return [ServiceProcess.uvicorn(environment, folder / f"replica{n}.log") for n in range(size)]


async def lock_holder(url: URL) -> dict[str, object] | None:
    connection = await connect(url)
    try:
        row = await connection.fetchrow(HOLDER)
        return dict(row) if row else None
    finally:
        await connection.close()


async def wait_for_holder(url: URL, fleet: list[ServiceProcess]) -> tuple[ServiceProcess, float]:
    """The replica that took the migration lock, and when it was first seen holding it."""
    by_pid = {process.pid: process for process in fleet}
    async with asyncio.timeout(90):
        while True:
            holder = await lock_holder(url)
            if holder is not None:
                pid = int(str(holder["application_name"]).rsplit("pid=", 1)[1])
                return by_pid[pid], time.monotonic()
            for process in fleet:
                process.assert_running()
            await asyncio.sleep(0.005)


async def migrator_query(url: URL) -> str:
    holder = await lock_holder(url)
    return str(holder["query"]) if holder and holder["state"] == "active" else ""


async def backfilled(url: URL) -> int:
    """Users with a provider so far; 0 before revision 0005 added the column."""
    connection = await connect(url)
    try:
        return int(
            await connection.fetchval("SELECT count(*) FROM users WHERE auth_provider IS NOT NULL")
        )
    except asyncpg.UndefinedColumnError:
        return 0
    finally:
        await connection.close()


def stop(fleet: list[ServiceProcess]) -> None:
    for process in fleet:
        process.stop()


async def clean_run(admin: URL, template: str, folder: Path) -> tuple[dict[str, object], float]:
    """One replica alone: what the schema and data should be, and how long the
    migration held the lock."""
    url = await create_database(admin, template=template)
    fleet = start_fleet(url, folder, 1)
    try:
        _, seen = await wait_for_holder(url, fleet)
        async with asyncio.timeout(120):
            while await lock_holder(url) is not None:  # noqa: ASYNC110 (polls the database)
                await asyncio.sleep(0.005)
        held = time.monotonic() - seen
        fleet[0].wait_for_phase("ready")
        return await snapshot(url), held
    finally:
        stop(fleet)
        await drop_database(admin, url.database or "")


@pytest.fixture(scope="module")
async def starts(
    admin_url: URL, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, Start]]:
    folder = tmp_path_factory.mktemp("clean")
    empty = await create_database(admin_url)
    seeded = await create_database(admin_url)
    result = run_python("-m", "alembic", "upgrade", BEFORE_IDENTITY, url=seeded)
    assert result.returncode == 0, result.stderr[-3000:]
    connection = await connect(seeded)
    await connection.execute(seed_users_sql(USERS))
    await connection.close()
    found = {}
    for name, url in (("empty", empty), ("seeded", seeded)):
        clean, seconds = await clean_run(admin_url, url.database or "", folder / name)
        found[name] = Start(name, url.database or "", clean, seconds)
    yield found
    for url in (empty, seeded):
        await drop_database(admin_url, url.database or "")


RUNS = [
    *(("empty", "random") for _ in range(4)),
    ("seeded", "backfill"),
    ("seeded", "backfill"),
    ("seeded", "concurrent index"),
    ("seeded", "concurrent index"),
    ("seeded", "random"),
    ("seeded", "random"),
]


async def kill_at(
    moment: str,
    url: URL,
    migrator: ServiceProcess,
    seen: float,
    start: Start,
    chance: random.Random,
) -> str:
    """Wait for the moment, SIGKILL the migrator, and say what its session was running."""
    async with asyncio.timeout(120):
        if moment == "random":
            await asyncio.sleep(
                max(0.0, seen + chance.uniform(0, start.clean_seconds) - time.monotonic())
            )
        elif moment == "backfill":
            wanted = int(USERS * chance.uniform(0.1, 0.9))
            while await backfilled(url) < wanted:  # noqa: ASYNC110 (polls the database)
                await asyncio.sleep(0.005)
            # Killed in a batch: between two, the session runs nothing for a
            # moment ('' seen), and at least a tenth of the rows are still to come.
            while "WITH batch AS" not in (running := await migrator_query(url)):  # noqa: ASYNC110 (polls the database)
                await asyncio.sleep(0.002)
            migrator.signal(signal.SIGKILL)
            return running
        else:
            # Killed on the poll that saw the build: a second look before the
            # kill let a busy machine finish the build in between ('' seen).
            while "CREATE UNIQUE INDEX CONCURRENTLY" not in (running := await migrator_query(url)):  # noqa: ASYNC110 (polls the database)
                await asyncio.sleep(0.002)
            migrator.signal(signal.SIGKILL)
            return running
        running = await migrator_query(url)
        migrator.signal(signal.SIGKILL)
    return running


@pytest.mark.parametrize(
    ("start_name", "moment"), RUNS, ids=[f"{n}-{s}-{m}" for n, (s, m) in enumerate(RUNS)]
)
async def test_killed_migrator_leaves_what_a_clean_run_leaves(
    start_name: str,
    moment: str,
    starts: dict[str, Start],
    admin_url: URL,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    start = starts[start_name]
    chance = random.Random(f"{SEED}-{request.node.callspec.id}")
    url = await create_database(admin_url, template=start.template)
    fleet = start_fleet(url, tmp_path, FLEET)
    try:
        migrator, seen = await wait_for_holder(url, fleet)
        running = await kill_at(moment, url, migrator, seen, start, chance)
        assert migrator.wait() == -signal.SIGKILL
        if moment == "backfill":
            assert "WITH batch AS" in running, running
            assert 0 < await backfilled(url) < USERS
        elif moment == "concurrent index":
            assert "CREATE UNIQUE INDEX CONCURRENTLY" in running, running
        survivors = [process for process in fleet if process is not migrator]
        for process in survivors:
            process.wait_for_phase("ready", timeout=120)
        assert await lock_holder(url) is None
        assert start.clean_snapshot["version"] == HEAD
        assert await snapshot(url) == start.clean_snapshot
        for process in survivors:
            assert "Traceback" not in process.logs(), process.logs()
    finally:
        stop(fleet)
        await drop_database(admin_url, url.database or "")
