"""4. API throughput and latency: wrk (2 threads, 16 connections, DURATION s
per run, loopback) against uvicorn with 1 and 2 workers, for four requests:
get one config, list configs (a page of 50), resolve a config three levels
deep for an environment, and create a config (a new key each request).
Baseline in the same run: bench/baseline_app.py, a minimal Starlette + asyncpg
app making the same queries and answering the same JSON (checked before the
runs). Both use a pool of 10 connections per worker. The service runs with its
defaults, request log included (LOG_LEVEL=info, JSON, to a file), and the HTTP
protocol `python -m service` ships (service/http_protocol.py: head, time and
connection limits); only its per-key rate limit and its quota of configs are
raised, so that wrk's one key is not throttled and its account can take every
create of the runs (the limiter still counts every request, and every create
still checks the account's quota). The servers
take turns, run by run, so all meet the same machine load.

Two peers share the run for get one (bench/reference_apps.py): plain FastAPI
with one `yield` dependency making the baseline's four round trips (BEGIN,
key, config, COMMIT), and plain FastAPI reading key and config in one
statement. `peers` gives every server's medians and its ratios to the
baseline's with the same workers; the load average of the machine is recorded
before and after the runs.

One more server, with one worker, measures what the driver's statement cache
is worth: the service with DATABASE_POOLER=transaction (no prepared statement
kept across transactions, as behind a transaction-pooling PgBouncer before
1.21), straight on the database so that only the cache differs, its reads
still one statement (the role's statement_timeout is set in the benchmark's
database, as docs/operations/poolers.md asks of an operator).

The runs start once every worker of each service server has finished its
startup checks (/readyz reports `verification`): a worker that starts at head
reads its revision scripts in a thread CHECK_SCRIPTS_AFTER seconds after it
starts (alembic_lockstep), once, and that would otherwise fall in the first
run of the first request and weigh on its p99.

Besides requests/s and latency, each run records the server's CPU time
(user and system, all its processes) per request answered: on a machine
shared with other work that is the steadier measure of what a request costs.
Peak resident memory (VmHWM) is read from every worker after the runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from bench.harness import (
    JSONAPI,
    Process,
    api_call,
    cpu_seconds,
    create_database,
    drop_database,
    environment,
    execute,
    full,
    included_key,
    migrate,
    new_account,
    peak_rss_mib,
    process_tree,
    summary,
    target,
)
from bench.startup import APP
from service.http_protocol import PROTOCOL

BASELINE = "bench.baseline_app:create_app"
# The peers, for get one only (bench/reference_apps.py).
REFERENCES = {
    "FastAPI, four round trips": "bench.reference_apps:four_round_trips",
    "FastAPI, one statement": "bench.reference_apps:one_statement",
}
# The service without the driver's statement cache (DATABASE_POOLER=transaction).
NO_CACHE = "service, no statement cache"
DURATION = int(os.environ.get("BENCH_WRK_SECONDS", "6"))
OPERATOR = "bench-operator-token-" + uuid.uuid4().hex
CREATE_SCRIPT = """
counter = 0
function init(args) run = args[1] end
function request()
  counter = counter + 1
  local body = string.format('{"data":{"type":"configs","attributes":{"key":"bench-%s-%s-%d","name":"Bench","items":{"n":%d}}}}', run, tostring(wrk.thread):gsub("[^%w]", ""), counter, counter)
  return wrk.format("POST", nil, nil, body)
end
"""


def tenant_with_configs(port: int) -> tuple[str, str, dict[str, str]]:
    """An account with 120 configs (40 roots, 40 children, 40 grandchildren):
    its owner's key, its first environment's key, and a config of each request."""
    created = new_account(port, OPERATOR)
    key = included_key(created)
    environment_key = next(i for i in created["included"] if i["type"] == "environments")[
        "attributes"
    ]["key"]
    parents: list[str | None] = [None] * 40
    for level in range(3):
        made = []
        for n, parent in enumerate(parents):
            attributes = {
                "key": f"c{level}-{n}",
                "name": f"Config {level}-{n}",
                "items": {f"level{level}": n, "shared": level, "nested": {"a": [1, 2, 3]}},
                # An override keeps its item's type (NUMBER): the service refuses others.
                "environments": {environment_key: {"shared": 100 + level}},
            }
            data: dict[str, Any] = {"type": "configs", "attributes": attributes}
            if parent:
                data["relationships"] = {"parent": {"data": {"type": "configs", "id": parent}}}
            made.append(api_call(port, "POST", "/v1/configs", key, {"data": data})["data"]["id"])
        parents = made  # type: ignore[assignment]
    return key, environment_key, {"deepest": str(parents[7])}


def service_environment(url: URL) -> dict[str, str]:
    """The service's settings in the runs: its defaults, with wrk's one key
    not throttled and its account able to take every create."""
    return environment(
        url, OPERATOR_TOKEN=OPERATOR, RATE_LIMIT_PER_KEY="1000000", QUOTA_CONFIGS="100000000"
    )


def measured_tenant(env: dict[str, str], folder: Path) -> tuple[str, dict[str, str]]:
    """The account the runs read and write (tenant_with_configs, made through a
    server of its own): its owner's key and each request's path."""
    setup = Process.uvicorn(APP, env, folder / "setup.log")
    try:
        setup.wait_ready()
        key, environment_key, configs = tenant_with_configs(setup.port)
    finally:
        setup.stop()
    return key, _paths(environment_key, configs["deepest"])


def _paths(environment_key: str, config_id: str) -> dict[str, str]:
    return {
        "get one": f"/v1/configs/{config_id}",
        "list 50": "/v1/configs?page[size]=50",
        "resolve": f"/v1/configs/{config_id}/resolved?environment={environment_key}",
        "create": "/v1/configs",
    }


LABELS = ("1 worker", "2 workers")
METRICS = ("rps", "p50_ms", "p99_ms", "cpu_ms")
# Requests/s of the service over the baseline's, at least (issue 24: targets).
RPS_TARGETS = {"get one": 0.8, "resolve": 0.8, "list 50": 1.0, "create": 0.8}
P99_TARGET = 2.0  # the service's p99 over the baseline's, at most, get one and resolve
RSS_TARGET_MIB = 85.0  # the peak resident memory of a service worker, at most
_LATENCY = re.compile(r"^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$", re.MULTILINE)
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(
    port: int,
    path: str,
    key: str,
    script: Path | None,
    pid: int = 0,
    threads: int = 2,
    connections: int = 16,
) -> dict[str, float]:
    """A wrk run: requests/s, p50 and p99 in ms, and with the server's `pid`
    its CPU ms per request."""
    cpu_before = cpu_seconds(pid) if pid else 0.0
    arguments = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{DURATION}s", "--latency"]
    arguments += ["-H", f"Authorization: Bearer {key}", "-H", f"Content-Type: {JSONAPI}"]
    if script is not None:
        arguments += ["-s", str(script)]
    arguments.append(f"http://127.0.0.1:{port}{path}")
    if script is not None:
        arguments += ["--", uuid.uuid4().hex[:8]]
    output = subprocess.run(
        arguments, capture_output=True, text=True, check=True, timeout=DURATION + 60
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", output).group(1))  # type: ignore[union-attr]
    latencies = {p: float(v) * _UNITS[u] for p, v, u in _LATENCY.findall(output)}
    failed = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors:.*", output)
    if failed or errors:
        raise RuntimeError(f"wrk saw failures on {path}:\n{output}")
    measured = {"rps": rps, "p50_ms": latencies["50"], "p99_ms": latencies["99"]}
    if pid:
        answered = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
        measured["cpu_ms"] = (cpu_seconds(pid) - cpu_before) * 1000 / max(answered, 1)
    return measured


def _same_json(ours: int, baseline: int, key: str, paths: dict[str, str]) -> None:
    for name in ("get one", "list 50", "resolve"):
        if name not in paths:
            continue
        a, b = api_call(ours, "GET", paths[name], key), api_call(baseline, "GET", paths[name], key)
        if a != b:
            raise RuntimeError(f"the baseline answers {name} differently:\n{a}\n{b}")


def benchmark(admin: URL, repeat: int) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk; scripts/bench does it)")
    url = create_database(admin)
    migrate(url)
    results: dict[str, Any] = {}
    rss: dict[str, float | None] = {}
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        script = folder / "create.lua"
        script.write_text(CREATE_SCRIPT)
        env = service_environment(url)
        key, paths = measured_tenant(env, folder)
        execute(
            admin.set(database=url.database),
            f"ALTER ROLE CURRENT_USER IN DATABASE {url.database} SET statement_timeout = '10s'",
        )
        pooler_mode = {**env, "DATABASE_POOLER": "transaction", "MIGRATION_DATABASE_URL": full(url)}
        servers = {}
        try:
            for workers in (1, 2):
                servers[f"service, {workers} worker{'s' if workers > 1 else ''}"] = Process.uvicorn(
                    APP, env, folder / f"service{workers}.log", workers, http=PROTOCOL
                )
                servers[f"baseline, {workers} worker{'s' if workers > 1 else ''}"] = (
                    Process.uvicorn(BASELINE, env, folder / f"baseline{workers}.log", workers)
                )
                for n, (reference, factory) in enumerate(REFERENCES.items()):
                    servers[f"{reference}, {workers} worker{'s' if workers > 1 else ''}"] = (
                        Process.uvicorn(
                            factory, env, folder / f"reference{n}-{workers}.log", workers
                        )
                    )
            servers[f"{NO_CACHE}, 1 worker"] = Process.uvicorn(
                APP, pooler_mode, folder / "nocache.log", 1, http=PROTOCOL
            )
            for process in servers.values():
                process.wait_ready()
            for server, process in servers.items():
                if server.startswith("service"):
                    _wait_verified(process.port)
            _same_json(
                servers["service, 1 worker"].port, servers["baseline, 1 worker"].port, key, paths
            )
            for reference in REFERENCES:
                _same_json(
                    servers[f"{reference}, 1 worker"].port,
                    servers["baseline, 1 worker"].port,
                    key,
                    {"get one": paths["get one"]},
                )
            samples: dict[str, dict[str, list[dict[str, float]]]] = {
                server: {name: [] for name in paths if _serves(server, name)} for server in servers
            }
            load_before = os.getloadavg()
            for _ in range(repeat):
                for name, path in paths.items():
                    for server, process in servers.items():
                        if not _serves(server, name):
                            continue
                        samples[server][name].append(
                            wrk(
                                process.port,
                                path,
                                key,
                                script if name == "create" else None,
                                process.popen.pid,
                            )
                        )
            load_after = os.getloadavg()
            for server, process in servers.items():
                rss[server] = _worker_peak_rss(process.popen.pid)
        finally:
            for process in servers.values():
                process.stop()
            drop_database(admin, url)
    for server, by_name in samples.items():
        results[server] = {
            name: {metric: summary([run[metric] for run in runs], 2) for metric in METRICS}
            for name, runs in by_name.items()
        }
    ratios = {
        label: {
            metric: {
                name: round(
                    _median(results, f"service, {label}", name, metric)
                    / _median(results, f"baseline, {label}", name, metric),
                    3,
                )
                for name in paths
            }
            for metric in METRICS
        }
        for label in LABELS
    }
    return {
        "title": "API throughput and latency",
        "method": __doc__,
        "unit": "requests per second; milliseconds",
        "results": results,
        "ratios": ratios,
        "peers": _peers(results),
        "load_average": {
            "before (1, 5, 15 min)": [round(v, 2) for v in load_before],
            "after (1, 5, 15 min)": [round(v, 2) for v in load_after],
        },
        "peak_rss_mib": rss,
        "targets": _targets(ratios, rss),
    }


def _serves(server: str, name: str) -> bool:
    """Whether `server` takes part in the runs of request `name` (the peers
    answer get one only)."""
    return name == "get one" or not server.startswith(tuple(REFERENCES))


def _peers(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every server's medians per request, with the ratio of each to the
    baseline's with as many workers."""
    rows = []
    for server, by_name in results.items():
        label = server.rsplit(", ", 1)[1]
        for name in by_name:
            row: dict[str, Any] = {"server": server, "request": name}
            for metric in METRICS:
                value = _median(results, server, name, metric)
                baseline = _median(results, f"baseline, {label}", name, metric)
                row[metric] = value
                row[f"{metric} / baseline"] = round(value / baseline, 3) if baseline else None
            rows.append(row)
    return rows


def _median(results: dict[str, Any], server: str, name: str, metric: str) -> float:
    return float(results[server][name][metric]["median"])


def _targets(ratios: dict[str, Any], rss: dict[str, float | None]) -> list[dict[str, Any]]:
    rows = [
        target(f"requests/s, service / baseline, {name}, {label}", ratio[name], limit, "at least")
        for label, ratio in ((label, ratios[label]["rps"]) for label in LABELS)
        for name, limit in RPS_TARGETS.items()
    ]
    rows += [
        target(
            f"p99, service / baseline, {name}, {label}",
            ratios[label]["p99_ms"][name],
            P99_TARGET,
            "at most",
        )
        for label in LABELS
        for name in ("get one", "resolve")
    ]
    peaks = [value for server, value in rss.items() if server.startswith("service") and value]
    rows.append(
        target("peak resident memory of one worker (MiB)", max(peaks), RSS_TARGET_MIB, "at most")
    )
    return rows


def _wait_verified(port: int, timeout: float = 120.0) -> None:
    """Until 20 answers of /readyz in a row (any of the server's workers)
    report the startup checks done."""
    # Only the operator is shown the bootstrap's details.
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/readyz", headers={"Authorization": f"Bearer {OPERATOR}"}
    )
    deadline = time.monotonic() + timeout
    in_a_row = 0
    while in_a_row < 20:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server on {port} did not finish its startup checks")
        try:
            with urllib.request.urlopen(request, timeout=2) as answer:
                verified = "verification" in json.loads(answer.read())
        except (OSError, ValueError):
            verified = False
        in_a_row = in_a_row + 1 if verified else 0
        time.sleep(0.05 if verified else 0.25)


def _worker_peak_rss(pid: int) -> float | None:
    """The largest VmHWM of the server's workers (the process itself with one)."""
    tree = process_tree(pid)
    workers = tree[1:] or tree
    peaks = [peak for peak in map(peak_rss_mib, workers) if peak is not None]
    return max(peaks) if peaks else None
