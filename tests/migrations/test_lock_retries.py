"""Waiting for a lock never stalls live traffic for long: a revision that needs
an ACCESS EXCLUSIVE lock on a table a long transaction reads first waits 0.1 s,
then twice as long each retry (up to MIGRATION_LOCK_TIMEOUT), with pauses in
between, and goes through once the reader ends. Reads of the table meanwhile
are reported (the harness holds the target: bench/blocked.py)."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import asyncpg
import pytest
from alembic_lockstep.retry import FIRST_LOCK_TIMEOUT
from sqlalchemy.engine import URL

from tests.support.configs import scenario_config
from tests.support.postgres import connect, plain, service_url
from tests.support.processes import ServiceProcess, service_environment, wait_for
from tests.support.reports import report

# Every test here starts a real process or server.
pytestmark = pytest.mark.processes

LONGEST_LOCK_TIMEOUT = 0.4
READS_PER_SECOND = 50
ATTEMPT = re.compile(r"could not get its locks within (\d+)ms; retry (\d+) of")


async def test_a_blocked_revision_retries_with_short_growing_lock_timeouts(
    migrated_database: URL, tmp_path: Path
) -> None:
    blocker = await connect(migrated_database)
    transaction = blocker.transaction()
    await transaction.start()
    await blocker.execute("LOCK TABLE configs IN ACCESS SHARE MODE")
    readers = await asyncpg.create_pool(plain(migrated_database), min_size=10, max_size=30)
    latencies: list[float] = []
    reading = asyncio.create_task(_read_at_a_steady_rate(readers, latencies))
    process = ServiceProcess.uvicorn(
        service_environment(
            DATABASE_URL=service_url(migrated_database),
            ALEMBIC_CONFIG=str(scenario_config("locking")),
            MIGRATION_LOCK_TIMEOUT=str(LONGEST_LOCK_TIMEOUT),
            LOG_FORMAT="json",
        ),
        tmp_path / "migrator.log",
    )
    try:
        await asyncio.to_thread(
            wait_for, lambda: len(_attempts(process)) >= 4, 60, "four blocked attempts"
        )
        await transaction.rollback()
        blocked = list(latencies)
        ready = await asyncio.to_thread(process.wait_for_phase, "ready")
    finally:
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        await readers.close()
        await blocker.close()
        process.stop()
    timeouts = [milliseconds for milliseconds, _ in _attempts(process)]
    expected = [
        round(min(LONGEST_LOCK_TIMEOUT, FIRST_LOCK_TIMEOUT * 2**n) * 1000)
        for n in range(len(timeouts))
    ]
    assert timeouts == expected
    assert [retry for _, retry in _attempts(process)] == list(range(1, len(timeouts) + 1))
    assert ready["current_revision"] == "test_locking"
    report("reads while a revision waits for its lock", _summary(blocked, len(timeouts)))


def _attempts(process: ServiceProcess) -> list[tuple[int, int]]:
    """(lock_timeout in ms, retry number) of each attempt that hit lock_timeout."""
    found = (ATTEMPT.search(event["message"]) for event in process.events())
    return [(int(match[1]), int(match[2])) for match in found if match]


async def _read_at_a_steady_rate(pool: asyncpg.Pool, latencies: list[float]) -> None:
    """Open loop: a read starts every 1/READS_PER_SECOND s whether or not the
    earlier ones finished; each latency counts from when it was due."""

    async def read(due: float) -> None:
        async with pool.acquire() as connection:
            await connection.fetchval("SELECT count(*) FROM configs")
        latencies.append(time.perf_counter() - due)

    tasks = set()
    while True:
        task = asyncio.create_task(read(time.perf_counter()))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        await asyncio.sleep(1 / READS_PER_SECOND)


def _summary(latencies: list[float], attempts: int) -> dict[str, object]:
    ordered = sorted(latencies)

    def percentile(fraction: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000, 1)

    return {
        "reads": len(ordered),
        "blocked_attempts": attempts,
        "longest_lock_timeout_ms": round(LONGEST_LOCK_TIMEOUT * 1000),
        "p50_ms": percentile(0.5),
        "p99_ms": percentile(0.99),
        "max_ms": round(ordered[-1] * 1000, 1),
    }
