"""6. Reads during a blocked migration: a replica of the service (2 workers,
at head) serves GET /v1/users at a steady 50 requests per second (open loop:
each request is sent when it is due, whatever the earlier ones are doing, and
its latency counts from then, so stalls are not hidden by a client that waits).
A long transaction (a report) holds ACCESS SHARE on users for 20 s;
meanwhile a migrator runs a revision that adds a column to users, which needs
ACCESS EXCLUSIVE: while it waits for its lock, every new read of users queues
behind it. Measured: the reads from when the migration starts until it is
done (it goes through once the report ends), and the same replica's reads for
a few seconds before, undisturbed.

- service: `python -m service migrate` with the defaults (lock_timeout 0.1 s,
  doubling per retry up to MIGRATION_LOCK_TIMEOUT = 0.5 s, jittered pauses from
  0.5 s to 30 s between attempts);
- fixed 5 s lock_timeout (before): the same ALTER TABLE with lock_timeout 5 s,
  rolled back and retried after a pause of 0.25 to min(10, 0.5 x 2^n) s, up to
  five times: the schedule the service had before.

Every run starts from a fresh copy of a database at head.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import URL

from bench.harness import (
    PYTHON,
    ROOT,
    Process,
    create_database,
    drop_database,
    environment,
    included_key,
    migrate,
    new_account,
    plain,
    summary,
    target,
)
from bench.startup import APP

RATE = 50
BEFORE_SECONDS = 4.0
BLOCKED_SECONDS = 20.0
MIGRATION_LIMIT_SECONDS = 120.0
OPERATOR = "bench-operator-token-blocked-0123456789abcdef"
ADD_COLUMN = "ALTER TABLE users ADD COLUMN bench_blocked integer"
REVISION = '''"""Benchmark only: a column added to users, which needs ACCESS EXCLUSIVE."""

import sqlalchemy as sa

from alembic import op

revision = "bench_blocked"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("bench_blocked", sa.Integer))


def downgrade() -> None:
    op.drop_column("users", "bench_blocked")
'''
VARIANTS = ("service", "fixed 5 s lock_timeout (before)")


def _scenario(folder: Path) -> Path:
    """alembic.ini with the service's revisions and the benchmark's one."""
    from alembic_lockstep import load_revisions

    (head,) = load_revisions(ROOT / "alembic.ini").heads
    versions = folder / "versions"
    versions.mkdir()
    (versions / "bench_blocked.py").write_text(REVISION.format(head=head))
    config = folder / "alembic.ini"
    config.write_text(
        "[alembic]\n"
        f"script_location = {ROOT / 'alembic'}\n"
        f"version_locations = {ROOT / 'alembic' / 'versions'} {versions}\n"
        "path_separator = space\n"
    )
    return config


async def _reads(port: int, key: str, stop: asyncio.Event) -> list[tuple[float, float, str]]:
    """(when it was due, latency, "" or what failed) of each read, sent at RATE
    per second until `stop`."""
    found: list[tuple[float, float, str]] = []
    # Idle connections are dropped before the server's keep-alive timeout (5 s) can
    # close one under a request being sent.
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=100, keepalive_expiry=2)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {key}"},
        limits=limits,
        timeout=60,
    ) as client:

        async def read(due: float) -> None:
            response = await client.get("/v1/users")
            failed = (
                "" if response.status_code == 200 else f"{response.status_code} {response.text}"
            )
            found.append((due, time.perf_counter() - due, failed))

        tasks = []
        due = time.perf_counter()
        while not stop.is_set():
            tasks.append(asyncio.create_task(read(due)))
            due += 1 / RATE
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
        await asyncio.gather(*tasks)
    return found


async def _hold_share_lock(url: URL, seconds: float) -> None:
    connection = await asyncpg.connect(plain(url))
    try:
        async with connection.transaction():
            await connection.execute("LOCK TABLE users IN ACCESS SHARE MODE")
            await asyncio.sleep(seconds)
    finally:
        await connection.close()


async def _service_migration(url: URL, config: Path) -> None:
    migrator = await asyncio.create_subprocess_exec(
        PYTHON, "-m", "service", "migrate", cwd=ROOT,
        env=environment(url, ALEMBIC_CONFIG=str(config)),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, errors = await migrator.communicate()
    if migrator.returncode != 0:
        raise RuntimeError(f"the migration failed:\n{errors.decode()[-3000:]}")


async def _fixed_timeout_migration(url: URL, _: Path) -> None:
    connection = await asyncpg.connect(plain(url))
    try:
        await connection.execute("SET lock_timeout = '5s'")
        for attempt in range(6):
            try:
                await connection.execute(ADD_COLUMN)
                return
            except asyncpg.exceptions.LockNotAvailableError:
                await asyncio.sleep(random.uniform(0.25, min(10.0, 0.5 * 2**attempt)))
        raise RuntimeError("the fixed-timeout migration gave up")
    finally:
        await connection.close()


async def _one_run(url: URL, port: int, key: str, variant: str, config: Path) -> dict[str, Any]:
    stop = asyncio.Event()
    reading = asyncio.create_task(_reads(port, key, stop))
    await asyncio.sleep(BEFORE_SECONDS)
    blocker = asyncio.create_task(_hold_share_lock(url, BLOCKED_SECONDS))
    await asyncio.sleep(0.2)
    started = time.perf_counter()
    work = _service_migration if variant == "service" else _fixed_timeout_migration
    async with asyncio.timeout(MIGRATION_LIMIT_SECONDS):
        await work(url, config)
    finished = time.perf_counter()
    await blocker
    stop.set()
    reads = await reading
    during = [latency for due, latency, _ in reads if started <= due <= finished]
    before = [latency for due, latency, _ in reads if due < started - 0.2]
    failures = [failed for _, _, failed in reads if failed]
    return {
        "during": during,
        "before": before,
        "failures": failures,
        "migration_seconds": finished - started,
    }


def _replica(url: URL, folder: Path) -> tuple[Process, str]:
    """A serving replica at head, and the API key of an account on it."""
    replica = Process.uvicorn(
        APP, environment(url, OPERATOR_TOKEN=OPERATOR), folder / "replica.log", workers=2
    )
    replica.wait_ready()
    # /readyz answered for one worker: wait for the other too.
    deadline = time.perf_counter() + 60
    while len(replica.pids_that_logged("schema at head")) < 2:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"a worker is not ready:\n{replica.log.read_text()[-3000:]}")
        time.sleep(0.05)
    return replica, included_key(new_account(replica.port, OPERATOR))


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def benchmark(admin: URL, repeat: int) -> dict[str, Any]:
    template = create_database(admin)
    folder = Path(tempfile.mkdtemp(prefix="platform-service-bench-blocked-"))
    samples: dict[str, dict[str, list[float]]] = {
        variant: {"p99": [], "max": [], "over_1s_percent": [], "migration_s": []}
        for variant in VARIANTS
    }
    before_p99: list[float] = []
    failures: dict[str, list[str]] = {variant: [] for variant in VARIANTS}
    try:
        migrate(template)
        config = _scenario(folder)
        for _ in range(repeat):
            for variant in VARIANTS:
                url = create_database(admin, template=template.database)
                replica = None
                try:
                    replica, key = _replica(url, folder)
                    measured = asyncio.run(_one_run(url, replica.port, key, variant, config))
                finally:
                    if replica is not None:
                        replica.stop()
                    drop_database(admin, url)
                during = measured["during"]
                failures[variant] += measured["failures"]
                samples[variant]["p99"].append(_percentile(during, 0.99))
                samples[variant]["max"].append(max(during))
                slow = sum(1 for latency in during if latency > 1.0)
                samples[variant]["over_1s_percent"].append(100 * slow / len(during))
                samples[variant]["migration_s"].append(measured["migration_seconds"])
                before_p99.append(_percentile(measured["before"], 0.99))
    finally:
        drop_database(admin, template)
        shutil.rmtree(folder, ignore_errors=True)
    results = {
        variant: {
            "p99 of reads during the migration (s)": summary(values["p99"], 3),
            "slowest read (s)": summary(values["max"], 3),
            "reads over 1 s (%)": summary(values["over_1s_percent"], 2),
            "migration start to done (s)": summary(values["migration_s"], 1),
        }
        for variant, values in samples.items()
    }
    results["undisturbed"] = {"p99 of reads before (s)": summary(before_p99, 3)}
    failed_reads = {
        variant: {"count": len(found), "first": found[0][:300] if found else None}
        for variant, found in failures.items()
    }
    service_p99 = results["service"]["p99 of reads during the migration (s)"]["median"]
    return {
        "title": "Reads during a blocked migration",
        "method": __doc__,
        "unit": "seconds; percent",
        "results": results,
        "failed_reads": failed_reads,
        "targets": [
            target(
                "p99 of reads during the blocked migration, median of the runs (s)",
                service_p99,
                1.0,
                "at most",
            ),
            target("failed reads (service)", failed_reads["service"]["count"], 0, "at most"),
        ],
    }
