"""8. Memory of a worker while clients leave large pages unread: one server
of the service with 1 worker, an account whose /api/v1/configs page is about
5 MiB (160 configs at 32 KiB of items), then CLIENTS raw connections that
each request the page and read nothing (receive buffer 4 KiB), left open for
SETTLE s; the worker's resident memory (VmRSS) added, from after one page
read whole (its steady state) to SETTLE s into the unread ones. Two
budgets, taking turns, REPEAT rounds, a new server for each measurement
(Python does not give freed memory back): ANSWER_BUFFER_BYTES at its
default (64 MiB) and at 1 GiB (no bound in practice: how it was, apart
from the pieces), each with 30 and 90 clients (150 and 450 MiB of pages
asked for; loopback's kernel buffers take about 2.8 MiB of each). The target:
with the default budget, the memory added by 90 clients at most 1.5 times
that of 30 (it does not grow with what they asked for; encoding a page
before its answer starts costs memory outside the budget).
"""

from __future__ import annotations

import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from bench.api import OPERATOR
from bench.harness import (
    Process,
    api_call,
    create_database,
    drop_database,
    environment,
    included_key,
    migrate,
    new_account,
    process_tree,
    summary,
    target,
)
from bench.startup import APP
from service.http_protocol import PROTOCOL

CLIENTS = (30, 90)
SETTLE = 8.0
BUDGETS = {"default budget (64 MiB)": str(64 * 1024 * 1024), "1 GiB budget": str(1024**3)}


def _large_account(port: int) -> str:
    key = included_key(new_account(port, OPERATOR))
    for number in range(160):
        items = {f"k{n}": {"value": "v" * 290, "type": "STRING"} for n in range(100)}
        body = {
            "data": {
                "type": "config",
                "id": f"large-{number}",
                "attributes": {"name": "L", "items": items},
            }
        }
        api_call(port, "POST", "/api/v1/configs", key, body)
    return key


def _worker_rss_mib(pid: int) -> float:
    """VmRSS of the server (one worker: one process), MiB."""
    total = 0
    for member in process_tree(pid):
        for line in Path(f"/proc/{member}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return round(total / 1024, 1)


def _unread_pages(port: int, key: str, count: int) -> list[socket.socket]:
    clients = []
    for _ in range(count):
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", port))
        client.sendall(
            f"GET /api/v1/configs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
        )
        clients.append(client)
    return clients


def _server(url: URL, budget: str, folder: Path) -> Process:
    env = environment(
        url,
        OPERATOR_TOKEN=OPERATOR,
        RATE_LIMIT_PER_KEY="1000000",
        ANSWER_BUFFER_BYTES=budget,
        HTTP_SEND_TIMEOUT="120",
    )
    process = Process.uvicorn(APP, env, folder / f"{budget}.log", workers=1, http=PROTOCOL)
    process.wait_ready()
    return process


def _growth(process: Process, key: str, count: int) -> float:
    """RSS added by the unread pages, after one page read (the steady state)."""
    api_call(process.port, "GET", "/api/v1/configs", key)
    before = _worker_rss_mib(process.popen.pid)
    clients = _unread_pages(process.port, key, count)
    time.sleep(SETTLE)
    added = _worker_rss_mib(process.popen.pid) - before
    for client in clients:
        client.close()
    return round(added, 1)


def benchmark(admin: URL, repeat: int) -> dict[str, Any]:
    url = create_database(admin)
    migrate(url)
    growth: dict[str, list[float]] = {
        f"{name}, {count} clients": [] for name in BUDGETS for count in CLIENTS
    }
    try:
        with tempfile.TemporaryDirectory() as temporary:
            folder = Path(temporary)
            first = _server(url, str(64 * 1024 * 1024), folder)
            try:
                key = _large_account(first.port)
            finally:
                first.stop()
            # A new server each time: freed memory is not given back to the system.
            for _ in range(repeat):
                for count in CLIENTS:
                    for name, budget in BUDGETS.items():
                        process = _server(url, budget, folder)
                        try:
                            growth[f"{name}, {count} clients"].append(_growth(process, key, count))
                        finally:
                            process.stop()
    finally:
        drop_database(admin, url)
    results = {name: summary(values, 1) for name, values in growth.items()}
    small, large = (results[f"default budget (64 MiB), {count} clients"] for count in CLIENTS)
    growth_ratio = round(large["median"] / small["median"], 3)
    return {
        "title": "Memory with large pages left unread",
        "method": __doc__,
        "unit": "MiB of worker resident memory added",
        "results": results,
        "targets": [
            target(
                f"worker memory added, default budget, {CLIENTS[1]} clients / {CLIENTS[0]}",
                growth_ratio,
                1.5,
                "at most",
            )
        ],
    }
