"""4e. Where a worker's memory goes: the resident memory (VmRSS, MiB) a
service worker adds at each step of its life, to see which part the API
benchmark's peak (VmHWM) is made of and which parts the service can change.

Imports: a fresh Python imports, in turn, what a worker imports, part by part
(uvicorn with uvloop and httptools; SQLAlchemy's core; its asyncio extension,
which imports the ORM; the PostgreSQL dialects and asyncpg; FastAPI with
pydantic, Starlette and the OpenTelemetry API it imports; pydantic.v1, which
FastAPI imports to check each field it makes; pydantic-settings;
prometheus_client; orjson and json_logic; alembic_lockstep; the settings; the
service's own modules; `create_app()`), and reads its VmRSS after each. A part
is what the process grew by when it was imported after the ones above it, so
a library two parts share counts in the first.

Serving: one worker as the API benchmark runs it (uvicorn, the service's HTTP
protocol, the same settings and account of 120 configs), its VmRSS once its
startup checks are done, and after a wrk run (the API benchmark's: 2 threads,
16 connections, DURATION s) of get one, a page of 50 and resolve in turn; the last line is
its VmHWM. The worker runs three ways: as shipped; with PYTHONOPTIMIZE=2
(Python drops docstrings and asserts as it compiles: not shipped, measured for
what the documentation strings of the libraries cost); and with
PGSSLMODE=disable (not shipped: asyncpg's default `prefer` makes a TLS context
for every connection it opens, measured for what that costs where the server
has no TLS). Each figure is the median of REPEAT runs, each in a new process.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from bench.api import _wait_verified, measured_tenant, service_environment, wrk
from bench.harness import (
    PYTHON,
    ROOT,
    Process,
    create_database,
    drop_database,
    migrate,
    process_tree,
    summary,
)
from bench.startup import APP
from service.http_protocol import PROTOCOL

# What a worker imports, part by part, in the order a part's first user loads it.
IMPORTS = {
    "interpreter": "",
    "uvicorn, uvloop, httptools": "import uvicorn, uvicorn.main, uvloop, httptools",
    "SQLAlchemy core": "import sqlalchemy",
    "SQLAlchemy asyncio extension (imports the ORM)": "import sqlalchemy.ext.asyncio",
    "PostgreSQL dialects, asyncpg": "import sqlalchemy.dialects.postgresql.asyncpg, asyncpg",
    "FastAPI, pydantic, Starlette, OpenTelemetry API": "import fastapi, pydantic",
    "pydantic.v1 (FastAPI checks each field with it)": (
        "import warnings\n"
        "with warnings.catch_warnings():\n"
        "    warnings.simplefilter('ignore')\n"
        "    import pydantic.v1"
    ),
    "pydantic-settings": "import pydantic_settings",
    "prometheus_client": "import prometheus_client",
    "orjson, json_logic": "import orjson, json_logic",
    "alembic_lockstep": "import alembic_lockstep, alembic_lockstep.serving",
    "settings": "import settings",
    "the service's modules": "import service.app",
    "create_app()": "service.app.create_app()",
}

_CHILD = """
import json, re, sys
from pathlib import Path
def rss():
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\\s+(\\d+)", status).group(1)) / 1024
steps = json.loads(sys.argv[1])
sizes = {}
for label, code in steps.items():
    before = rss()
    exec(code)
    sizes[label] = rss() - (0 if label == "interpreter" else before)
print(json.dumps(sizes))
"""

VARIANTS = {
    "as shipped": {},
    "PYTHONOPTIMIZE=2 (not shipped)": {"PYTHONOPTIMIZE": "2"},
    "PGSSLMODE=disable (not shipped)": {"PGSSLMODE": "disable"},
}
LOADS = ("get one", "list 50", "resolve")


def _status(pid: int) -> dict[str, float]:
    text = Path(f"/proc/{pid}/status").read_text()
    return {
        line.split(":")[0]: int(line.split()[1]) / 1024
        for line in text.splitlines()
        if line.startswith(("VmRSS:", "VmHWM:"))
    }


def _imports(env: dict[str, str]) -> dict[str, float]:
    output = subprocess.run(
        [PYTHON, "-c", _CHILD, json.dumps(IMPORTS)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    sizes: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    return sizes


def _serving(env: dict[str, str], log: Path, key: str, paths: dict[str, str]) -> dict[str, float]:
    process = Process.uvicorn(APP, env, log, 1, http=PROTOCOL)
    try:
        process.wait_ready()
        worker = process_tree(process.popen.pid)[-1]
        _wait_verified(process.port)
        steps = {"ready, startup checks done": _status(worker)["VmRSS"]}
        for name in LOADS:
            wrk(process.port, paths[name], key, None)
            steps[f"after wrk: {name}"] = _status(worker)["VmRSS"]
        steps["peak (VmHWM)"] = _status(worker)["VmHWM"]
        return steps
    finally:
        process.stop()


def benchmark(admin: URL, repeat: int) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk; scripts/bench does it)")
    url = create_database(admin)
    migrate(url)
    try:
        env = service_environment(url)
        imports: dict[str, list[float]] = {label: [] for label in IMPORTS}
        serving: dict[str, dict[str, list[float]]] = {variant: {} for variant in VARIANTS}
        with tempfile.TemporaryDirectory() as temporary:
            folder = Path(temporary)
            key, paths = measured_tenant(env, folder)
            for run in range(repeat):
                for label, size in _imports(env).items():
                    imports[label].append(size)
                for number, (variant, extra) in enumerate(VARIANTS.items()):
                    log = folder / f"worker-{run}-{number}.log"
                    measured = _serving({**env, **extra}, log, key, paths)
                    for step, value in measured.items():
                        serving[variant].setdefault(step, []).append(value)
    finally:
        drop_database(admin, url)
    results: dict[str, Any] = {
        "imports (MiB each part adds)": {
            label: summary(values, 2) for label, values in imports.items()
        },
    }
    for variant, steps in serving.items():
        results[f"serving, {variant} (VmRSS MiB)"] = {
            step: summary(values, 2) for step, values in steps.items()
        }
    shipped = results["serving, as shipped (VmRSS MiB)"]
    parts = results["imports (MiB each part adds)"]
    libraries = sum(
        parts[label]["median"]
        for label in list(IMPORTS)[: list(IMPORTS).index("orjson, json_logic") + 1]
    )
    own = sum(
        parts[label]["median"] for label in list(IMPORTS)[list(IMPORTS).index("alembic_lockstep") :]
    )
    return {
        "title": "Where a worker's memory goes",
        "method": __doc__,
        "unit": "MiB",
        "results": results,
        "ratios": {
            "interpreter and libraries (MiB)": round(libraries, 2),
            "the service's imports and create_app() (MiB)": round(own, 2),
            "startup to ready, startup checks done (MiB)": round(
                shipped["ready, startup checks done"]["median"] - libraries - own, 2
            ),
            "under load, to the peak (MiB)": round(
                shipped["peak (VmHWM)"]["median"] - shipped["ready, startup checks done"]["median"],
                2,
            ),
        },
    }
