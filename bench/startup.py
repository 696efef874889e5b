"""1. Time to ready at head: process start to the first 200 from /readyz, the
database already at head.

- service: the app as deployed (MIGRATE_ON_STARTUP=true, the default);
- bare app: the same app with MIGRATE_ON_STARTUP=false (no bootstrap work
  beyond reading the database's revision);
- two-process: `alembic upgrade head` to completion, then the bare app.

The three run interleaved, REPEAT rounds, one process at a time.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from bench.harness import (
    PYTHON,
    Process,
    create_database,
    drop_database,
    environment,
    migrate,
    ratio,
    run,
    summary,
    target,
)

APP = "service.app:create_app"


def _service(url: URL, folder: Path, **variables: str) -> float:
    process = Process.uvicorn(APP, environment(url, **variables), folder / "service.log")
    try:
        return process.wait_ready()
    finally:
        process.stop()


def _two_process(url: URL, folder: Path) -> float:
    started = time.perf_counter()
    run([PYTHON, "-m", "alembic", "upgrade", "head"], environment(url))
    process = Process.uvicorn(APP, environment(url, MIGRATE_ON_STARTUP="false"), folder / "two.log")
    try:
        process.wait_ready()
        return time.perf_counter() - started
    finally:
        process.stop()


def benchmark(admin: URL, repeat: int) -> dict[str, Any]:
    url = create_database(admin)
    migrate(url)
    samples: dict[str, list[float]] = {"service": [], "bare app": [], "two-process": []}
    try:
        with tempfile.TemporaryDirectory() as folder:
            _service(url, Path(folder))  # warm the file cache once, unmeasured
            for _ in range(repeat):
                samples["service"].append(_service(url, Path(folder)))
                samples["bare app"].append(_service(url, Path(folder), MIGRATE_ON_STARTUP="false"))
                samples["two-process"].append(_two_process(url, Path(folder)))
    finally:
        drop_database(admin, url)
    results = {name: summary(values) for name, values in samples.items()}
    to_bare = ratio(results["service"], results["bare app"])
    to_two = ratio(results["service"], results["two-process"])
    return {
        "title": "Time to ready at head",
        "method": __doc__,
        "unit": "seconds",
        "results": results,
        "targets": [
            target("service / bare app", to_bare, 1.15, "at most"),
            target("service / two-process start", to_two, 0.5, "at most"),
        ],
    }
