"""7. Tenants share a worker: the latency of a quiet tenant (wrk, 1 thread, 4
connections, get one config) alone and while a noisy tenant reads heavily at
the same time (wrk, 2 threads, 32 connections, lists of 100 configs with
their items), DURATION s per run, loopback. Three servers of the service with
2 workers and the default pool (10 connections per worker), the same
database: one with the default ACCOUNT_POOL_SHARE (0.5: an account's
requests hold at most 5 of a worker's connections, its further requests
wait for their turn), one with 0.2 (2 connections), one with
ACCOUNT_POOL_SHARE=1 (no share: how it was before). The servers take turns, REPEAT rounds. The target (issue 22): the
quiet tenant's p99 while the noisy one runs at most twice its p99 alone.
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from bench.api import DURATION, OPERATOR, tenant_with_configs, wrk
from bench.harness import (
    Process,
    create_database,
    drop_database,
    environment,
    migrate,
    summary,
    target,
)
from bench.startup import APP
from service.http_protocol import PROTOCOL

SHARES = {"share 0.5 (default)": "0.5", "share 0.2": "0.2", "no share (1.0)": "1"}
NOISY_PATH = "/v1/configs?page[size]=100"


def _noisy(port: int, key: str, done: threading.Event) -> None:
    try:
        wrk(port, NOISY_PATH, key, None, threads=2, connections=32)
    except (RuntimeError, subprocess.SubprocessError):
        pass  # the noisy tenant may be refused (503): only the quiet one is measured
    finally:
        done.set()


def _quiet(port: int, key: str, path: str) -> dict[str, float]:
    return wrk(port, path, key, None, threads=1, connections=4)


def benchmark(admin: URL, repeat: int) -> dict[str, Any]:
    url = create_database(admin)
    migrate(url)
    servers: dict[str, Process] = {}
    samples: dict[str, dict[str, list[float]]] = {
        name: {"alone": [], "with noisy": []} for name in SHARES
    }
    try:
        with tempfile.TemporaryDirectory() as temporary:
            for name, share in SHARES.items():
                env = environment(
                    url,
                    OPERATOR_TOKEN=OPERATOR,
                    RATE_LIMIT_PER_KEY="1000000",
                    ACCOUNT_POOL_SHARE=share,
                )
                log = Path(temporary) / f"{share}.log"
                servers[name] = Process.uvicorn(APP, env, log, workers=2, http=PROTOCOL)
            for process in servers.values():
                process.wait_ready()
            port = next(iter(servers.values())).port
            quiet_key, _, configs = tenant_with_configs(port)
            noisy_key, _, _ = tenant_with_configs(port)
            quiet_path = f"/v1/configs/{configs['deepest']}"
            for _ in range(repeat):
                for name, process in servers.items():
                    samples[name]["alone"].append(
                        _quiet(process.port, quiet_key, quiet_path)["p99_ms"]
                    )
                    done = threading.Event()
                    noisy = threading.Thread(target=_noisy, args=(process.port, noisy_key, done))
                    noisy.start()
                    samples[name]["with noisy"].append(
                        _quiet(process.port, quiet_key, quiet_path)["p99_ms"]
                    )
                    noisy.join(DURATION + 90)
    finally:
        for process in servers.values():
            process.stop()
        drop_database(admin, url)
    results = {
        name: {case: summary(values, 2) for case, values in by_case.items()}
        for name, by_case in samples.items()
    }
    ratios = {
        name: round(results[name]["with noisy"]["median"] / results[name]["alone"]["median"], 3)
        for name in SHARES
    }
    return {
        "title": "Tenants sharing a worker",
        "method": __doc__,
        "unit": "milliseconds (p99 of the quiet tenant)",
        "results": results,
        "ratios": ratios,
        "targets": [
            target(f"quiet p99 with noisy / alone, {name}", ratios[name], 2.0, "at most")
            for name in SHARES
        ],
    }
