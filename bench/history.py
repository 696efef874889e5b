"""3. Bootstrap cost against history length: 10, 100 and 1,000 generated
revisions (each a small DDL statement in a file shaped like the service's
revisions), the database at head.

- service bootstrap: the time the bootstrap itself reports from start to
  ready ("schema at head ... after S s" in its log), and the process's time
  from start to the first 200 on /readyz;
- plain Alembic: `command.upgrade(config, "head")` timed inside a Python
  process that has already imported Alembic (its at-head work: reading every
  revision script and the version table), with Alembic's own async env.py
  template (no lock); and the whole `alembic upgrade head` process.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import textwrap
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
    run,
    summary,
    target,
)
from bench.startup import APP

LENGTHS = (10, 100, 1000)
PLAIN_TIMER = """
import sys, time
from alembic import command
from alembic.config import Config
config = Config(sys.argv[1])
started = time.perf_counter()
command.upgrade(config, "head")
print(time.perf_counter() - started)
"""
REVISION = '''\
"""history step {n}: comment on the bench_history table

Revision ID: {revision}
Revises: {down}
Create Date: 2026-11-27 07:00:00+00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "{revision}"
down_revision: str | Sequence[str] | None = {down_literal}
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    {upgrade}


def downgrade() -> None:
    {downgrade}
'''


def _revision_id(n: int) -> str:
    return f"h{n:04d}"


def write_history(folder: Path, length: int) -> tuple[Path, Path]:
    """A service-style migrations folder (our env.py) and a plain one, both over
    the same `length` generated revisions; their alembic.ini files."""
    versions = folder / "versions"
    versions.mkdir(parents=True)
    for n in range(1, length + 1):
        down = _revision_id(n - 1) if n > 1 else None
        if n == 1:
            upgrade = (
                'op.create_table("bench_history", sa.Column("id", sa.Integer, primary_key=True))'
            )
            downgrade = 'op.drop_table("bench_history")'
        else:
            upgrade = f"op.execute(sa.text(\"COMMENT ON TABLE bench_history IS 'step {n}'\"))"
            downgrade = 'op.execute(sa.text("COMMENT ON TABLE bench_history IS NULL"))'
        (versions / f"20261127_{_revision_id(n)}_history_step_{n}.py").write_text(
            REVISION.format(
                n=n,
                revision=_revision_id(n),
                down=down or "",
                down_literal=repr(down),
                upgrade=upgrade,
                downgrade=downgrade,
            )
        )
    service = folder / "service"
    service.mkdir()
    shutil.copy(ROOT / "alembic" / "env.py", service / "env.py")
    (service / "alembic.ini").write_text(
        textwrap.dedent(
            f"""\
            [alembic]
            script_location = {service}
            version_locations = {versions}
            prepend_sys_path = {ROOT}
            path_separator = space
            """
        )
    )
    plain = folder / "plain"
    plain.mkdir()
    shutil.copy(ROOT / "bench" / "unlocked" / "env.py", plain / "env.py")
    (plain / "alembic.ini").write_text(
        f"[alembic]\nscript_location = {plain}\nversion_locations = {versions}\npath_separator = space\n"
    )
    from alembic_lockstep import write_manifest

    write_manifest(service / "alembic.ini", (_revision_id(length),))
    return service / "alembic.ini", plain / "alembic.ini"


BOOTSTRAP_SECONDS = re.compile(r"schema at head \S+ after ([0-9.]+)s")


def _service(url: URL, config: Path, folder: Path) -> tuple[float, float]:
    process = Process.uvicorn(APP, environment(url, ALEMBIC_CONFIG=str(config)), folder / "s.log")
    try:
        to_ready = process.wait_ready()
        for event in process.events():
            found = BOOTSTRAP_SECONDS.match(str(event.get("message", "")))
            if found:
                return float(found.group(1)), to_ready
        raise RuntimeError("no bootstrap time in the log")
    finally:
        process.stop()


def _plain(url: URL, config: Path) -> tuple[float, float]:
    import subprocess
    import time

    started = time.perf_counter()
    result = subprocess.run(
        [PYTHON, "-c", PLAIN_TIMER, str(config)],
        cwd=ROOT,
        env=environment(url),
        capture_output=True,
        text=True,
        check=True,
    )
    return float(result.stdout.strip().splitlines()[-1]), time.perf_counter() - started


def benchmark(admin: URL, repeat: int) -> dict[str, Any]:
    names = (
        "service bootstrap",
        "service process to ready",
        "plain alembic at head",
        "plain alembic process",
    )
    samples: dict[str, dict[int, list[float]]] = {name: {n: [] for n in LENGTHS} for name in names}
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        setups = {}
        for length in LENGTHS:
            service_config, plain_config = write_history(folder / str(length), length)
            url = create_database(admin)
            run(
                [PYTHON, "-m", "alembic", "-c", str(service_config), "upgrade", "head"],
                environment(url),
            )
            setups[length] = (url, service_config, plain_config)
        try:
            for _ in range(repeat):
                for length, (url, service_config, plain_config) in setups.items():
                    bootstrap, to_ready = _service(url, service_config, folder)
                    samples["service bootstrap"][length].append(bootstrap)
                    samples["service process to ready"][length].append(to_ready)
                    at_head, process = _plain(url, plain_config)
                    samples["plain alembic at head"][length].append(at_head)
                    samples["plain alembic process"][length].append(process)
        finally:
            for url, _, _ in setups.values():
                drop_database(admin, url)
    results = {
        name: {str(length): summary(values) for length, values in by_length.items()}
        for name, by_length in samples.items()
    }

    def growth(name: str) -> float:
        return round(
            results[name][str(LENGTHS[-1])]["median"] / results[name][str(LENGTHS[0])]["median"], 3
        )

    return {
        "title": "Bootstrap cost against history length",
        "method": __doc__,
        "unit": "seconds",
        "results": results,
        "growth_1000_over_10": {name: growth(name) for name in names},
        "targets": [
            target(
                "service bootstrap at head, 1,000 / 10 revisions",
                growth("service bootstrap"),
                1.1,
                "at most",
            ),
            target(
                "service process to ready, 1,000 / 10 revisions",
                growth("service process to ready"),
                1.1,
                "at most",
            ),
        ],
    }
