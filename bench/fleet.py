"""2. Fleet cold start: N processes of W uvicorn workers each start at once on
an empty database; the time from the first start until every worker of every
process has logged that the schema is at head (and each port answers 200 on
/readyz). Against: one process alone (N = 1), the same measurement.

On a machine with fewer cores than interpreters, starting them is CPU-bound;
so the same fleet is also timed on a database already at head with
MIGRATE_ON_STARTUP=false (the fleet's start alone, no migration), and the
ratio of the two shows what migrating and coordinating adds.

For contrast, the way without a lock: N processes start at once and each runs
plain `alembic upgrade head` with an env.py that takes no lock
(bench/unlocked); the failed processes and the revisions applied more than once
are counted.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from bench.harness import (
    PYTHON,
    ROOT,
    Process,
    create_database,
    drop_database,
    environment,
    migrate,
    ratio,
    summary,
    target,
)
from bench.startup import APP

SIZES = (1, 2, 4, 8)
WORKERS = 2
UNLOCKED_CONFIG = ROOT / "bench" / "unlocked" / "alembic.ini"


def _workers_at_head(process: Process) -> int:
    return len(process.pids_that_logged("schema at head"))


def _fleet(url: URL, size: int, folder: Path, **variables: str) -> tuple[float, int]:
    """Seconds until all are ready, and how many error events they logged."""
    fleet: list[Process] = []
    try:
        started = time.perf_counter()
        fleet = [
            Process.uvicorn(
                APP, environment(url, **variables), folder / f"p{n}.log", workers=WORKERS
            )
            for n in range(size)
        ]
        deadline = started + 300
        waiting = list(fleet)
        while waiting and time.perf_counter() < deadline:
            waiting = [p for p in waiting if _workers_at_head(p) < WORKERS]
            time.sleep(0.01)
        if waiting:
            raise RuntimeError(f"{len(waiting)} processes not at head after 300 s")
        for process in fleet:
            process.wait_ready()
        elapsed = time.perf_counter() - started
        errors = sum(
            1 for p in fleet for event in p.events() if event.get("level") in {"error", "critical"}
        )
        return elapsed, errors
    finally:
        for process in fleet:
            process.stop()


def _cold(admin: URL, size: int, folder: Path) -> tuple[float, int]:
    url = create_database(admin)
    try:
        return _fleet(url, size, folder)
    finally:
        drop_database(admin, url)


def _unlocked(admin: URL, size: int, folder: Path) -> dict[str, Any]:
    import subprocess

    url = create_database(admin)
    try:
        env = environment(url)
        outputs = []
        processes = [
            subprocess.Popen(
                [PYTHON, "-m", "alembic", "-c", str(UNLOCKED_CONFIG), "upgrade", "head"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(size)
        ]
        codes = []
        for process in processes:
            output, _ = process.communicate(timeout=300)
            codes.append(process.returncode)
            outputs.append(output)
        applied = sum(output.count("Running upgrade") for output in outputs)
        (folder / f"unlocked-{size}.log").write_text("\n".join(outputs))
        return {
            "processes": size,
            "failed_processes": sum(1 for code in codes if code != 0),
            "revisions_started": applied,
            "revisions_in_history": 9,
        }
    finally:
        drop_database(admin, url)


def benchmark(admin: URL, repeat: int) -> dict[str, Any]:
    errors: dict[str, int] = {}
    at_head = create_database(admin)
    migrate(at_head)
    with tempfile.TemporaryDirectory() as folder:
        cold: dict[int, list[float]] = {size: [] for size in SIZES}
        warm: dict[int, list[float]] = {size: [] for size in SIZES}
        try:
            for _ in range(repeat):
                for size in SIZES:
                    elapsed, logged = _cold(admin, size, Path(folder))
                    cold[size].append(elapsed)
                    errors[f"{size} x {WORKERS}"] = errors.get(f"{size} x {WORKERS}", 0) + logged
                    warm[size].append(
                        _fleet(at_head, size, Path(folder), MIGRATE_ON_STARTUP="false")[0]
                    )
        finally:
            drop_database(admin, at_head)
        unlocked = [_unlocked(admin, size, Path(folder)) for size in SIZES]
    results = {
        "empty database": {f"{size} x {WORKERS}": summary(cold[size]) for size in SIZES},
        "at head, no migration (start alone)": {
            f"{size} x {WORKERS}": summary(warm[size]) for size in SIZES
        },
    }
    largest = results["empty database"][f"{SIZES[-1]} x {WORKERS}"]
    started_alone = results["at head, no migration (start alone)"][f"{SIZES[-1]} x {WORKERS}"]
    return {
        "title": "Fleet cold start on an empty database",
        "method": __doc__,
        "unit": "seconds",
        "results": results,
        "error_events": errors,
        "unlocked": unlocked,
        "targets": [
            target(
                f"{SIZES[-1]} x {WORKERS} / one process alone",
                ratio(largest, results["empty database"][f"1 x {WORKERS}"]),
                1.2,
                "at most",
            ),
            target(
                f"{SIZES[-1]} x {WORKERS} on an empty database / the same fleet's start alone",
                ratio(largest, started_alone),
                1.2,
                "at most",
            ),
            target(
                f"error events logged by {SIZES[-1]} x {WORKERS}",
                errors[f"{SIZES[-1]} x {WORKERS}"],
                0,
                "at most",
            ),
        ],
    }
