"""6. The cost of the service's HTTP protocol (service/http_protocol.py: head
size, head, body and send timeouts, connection limit) against uvicorn's own
httptools protocol it extends: one worker of the service each, the same
database and key, wrk (2 threads, 16 connections, DURATION s per run,
loopback) on /livez (no database: the protocol's share of a request is the
largest there) and on get one config. The two servers run interleaved, REPEAT
rounds, so both meet the same machine load.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from bench.api import OPERATOR, tenant_with_configs, wrk
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

PROTOCOLS = {"uvicorn's httptools": "httptools", "service protocol": PROTOCOL}


def benchmark(admin: URL, repeat: int) -> dict[str, Any]:
    url = create_database(admin)
    migrate(url)
    env = environment(url, OPERATOR_TOKEN=OPERATOR, RATE_LIMIT_PER_KEY="1000000")
    samples: dict[str, dict[str, list[dict[str, float]]]] = {
        name: {"livez": [], "get one": []} for name in PROTOCOLS
    }
    servers: dict[str, Process] = {}
    try:
        with tempfile.TemporaryDirectory() as temporary:
            folder = Path(temporary)
            for name, protocol in PROTOCOLS.items():
                servers[name] = Process.uvicorn(
                    APP, env, folder / f"{protocol.split(':')[0]}.log", http=protocol
                )
            for process in servers.values():
                process.wait_ready()
            key, _, configs = tenant_with_configs(next(iter(servers.values())).port)
            paths = {"livez": "/livez", "get one": f"/v1/configs/{configs['deepest']}"}
            for _ in range(repeat):
                for path_name, path in paths.items():
                    for name, process in servers.items():
                        samples[name][path_name].append(wrk(process.port, path, key, None))
    finally:
        for process in servers.values():
            process.stop()
        drop_database(admin, url)
    results = {
        name: {
            path: {
                metric: summary([run[metric] for run in runs], 2) for metric in ("rps", "p99_ms")
            }
            for path, runs in by_path.items()
        }
        for name, by_path in samples.items()
    }
    ratios = {
        path: round(
            results["service protocol"][path]["rps"]["median"]
            / results["uvicorn's httptools"][path]["rps"]["median"],
            3,
        )
        for path in ("livez", "get one")
    }
    return {
        "title": "Cost of the bounded HTTP protocol",
        "method": __doc__,
        "unit": "requests per second; milliseconds",
        "results": results,
        "ratios": ratios,
        "targets": [
            target(
                f"requests/s, service protocol / httptools, {path}", ratios[path], 0.95, "at least"
            )
            for path in ratios
        ],
    }
