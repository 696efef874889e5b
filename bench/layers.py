"""4b. What a point read costs, layer by layer: CPU time per get-one request
in one process, with no HTTP server (uvicorn's parsing, which the service
and the baseline both pay, is left out). The same request and the same
rows, taken four ways, each run REQUESTS times in turn, one after another,
REPEAT times:

- the service's app, called as uvicorn calls it (ASGI): middleware (request
  log, metrics, errors, content negotiation, body limit), routing, FastAPI's
  dependencies (readiness, key, rate limit, transaction, role), the handler;
- its database work alone through SQLAlchemy Core, as the service did before
  its hot statements went to the driver: pool, BEGIN, the key, the config,
  COMMIT, with prebuilt statements;
- the same on the driver connection inside SQLAlchemy's transaction
  (service/db/driver.py), as the service does now;
- the same on an asyncpg pool alone, as the baseline does.

Each of the last three also builds and encodes the answer's JSON with the
service's own functions, so the differences are the layers: the first minus
the third is what the web framework and the product's middleware cost, the
second minus the third what SQLAlchemy's execution costs.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import URL

from bench.api import OPERATOR, tenant_with_configs
from bench.baseline_app import json_codecs
from bench.harness import (
    Process,
    create_database,
    drop_database,
    environment,
    full,
    migrate,
    summary,
)
from bench.startup import APP

REQUESTS = int(os.environ.get("BENCH_LAYER_REQUESTS", "2000"))
CALLER = (
    "SELECT k.id AS key_id, k.account_id, k.user_id, k.secret_hash, k.max_role, u.role"
    " FROM api_keys AS k JOIN users AS u ON u.id = k.user_id"
    " WHERE k.secret_hash = $1 AND k.revoked_at IS NULL"
)
ONE = (
    "SELECT id, account_id, parent_id, key, name, description, items, environments,"
    " item_definitions, managed, created_at, updated_at"
    " FROM configs WHERE id = $1 AND account_id = $2"
)
VARIANTS = (
    "the service's app (ASGI, no HTTP server)",
    "database work through SQLAlchemy Core",
    "database work on the driver, in SQLAlchemy's transaction",
    "database work on an asyncpg pool alone",
)


def benchmark(admin: URL, repeat: int) -> dict[str, Any]:
    url = create_database(admin)
    try:
        migrate(url)
        env = environment(url, OPERATOR_TOKEN=OPERATOR, RATE_LIMIT_PER_KEY="1000000")
        with tempfile.TemporaryDirectory() as temporary:
            setup = Process.uvicorn(APP, env, Path(temporary) / "setup.log")
            try:
                setup.wait_ready()
                key, _, configs = tenant_with_configs(setup.port)
            finally:
                setup.stop()
            # The request log goes to a file, as in the API benchmark.
            with (Path(temporary) / "layers.log").open("w") as log, redirect_stderr(log):
                samples = asyncio.run(
                    _measure(url, env, key, uuid.UUID(configs["deepest"]), repeat)
                )
    finally:
        drop_database(admin, url)
    return {
        "title": "A get-one's CPU by layer (in process)",
        "method": __doc__,
        "unit": "CPU ms per request",
        "results": {name: {"cpu_ms": summary(runs, 3)} for name, runs in samples.items()},
    }


async def _measure(
    url: URL, env: dict[str, str], key: str, config_id: uuid.UUID, repeat: int
) -> dict[str, list[float]]:
    os.environ.update(env)
    from service.api.configs import config_resource
    from service.api.jsonapi import encode, single
    from service.app import create_app
    from service.db.driver import DriverStatement

    app = create_app()
    samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
    digest = hashlib.sha256(key.encode()).digest()
    path = f"/v1/configs/{config_id}"
    caller_core = text(CALLER.replace("$1", ":digest"))
    one_core = text(ONE.replace("$1", ":id").replace("$2", ":account"))
    caller_driver, one_driver = DriverStatement(CALLER), DriverStatement(ONE)
    pool = await asyncpg.create_pool(
        full(url).replace("postgresql+asyncpg://", "postgresql://"),
        min_size=1,
        max_size=1,
        init=json_codecs,
    )
    async with app.router.lifespan_context(app) as lifespan_state:
        state: Mapping[str, Any] = lifespan_state or {}
        while not state["bootstrap"].status.ready:  # noqa: ASYNC110 (polls the bootstrap's status)
            await asyncio.sleep(0.05)
        engine = state["engine"]
        statuses: list[int] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        async def through_the_app() -> None:
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "GET",
                "scheme": "http",
                "path": path,
                "raw_path": path.encode(),
                "query_string": b"",
                "root_path": "",
                "headers": [(b"host", b"bench"), (b"authorization", f"Bearer {key}".encode())],
                "client": ("127.0.0.1", 40000),
                "server": ("127.0.0.1", 8000),
                "state": dict(state),
                "app": app,
            }
            await app(scope, receive, send)

        async def through_core() -> None:
            async with engine.begin() as connection:
                who = (await connection.execute(caller_core, {"digest": digest})).mappings().one()
                row = (
                    (
                        await connection.execute(
                            one_core, {"id": config_id, "account": who["account_id"]}
                        )
                    )
                    .mappings()
                    .one()
                )
            encode(single(config_resource(row)))

        async def on_the_driver() -> None:
            async with engine.begin() as connection:
                who = await caller_driver.fetchrow(connection, digest)
                assert who is not None
                row = await one_driver.fetchrow(connection, config_id, who["account_id"])
            encode(single(config_resource(row)))

        async def on_a_pool() -> None:
            async with pool.acquire() as connection, connection.transaction():
                who = await connection.fetchrow(CALLER, digest)
                row = await connection.fetchrow(ONE, config_id, who["account_id"])
            encode(single(config_resource(row)))

        runs: dict[str, Callable[[], Awaitable[None]]] = dict(
            zip(VARIANTS, (through_the_app, through_core, on_the_driver, on_a_pool), strict=True)
        )
        for _ in range(repeat):
            for name, run in runs.items():
                for _ in range(REQUESTS // 10):  # warm up
                    await run()
                started = time.process_time()
                for _ in range(REQUESTS):
                    await run()
                samples[name].append((time.process_time() - started) * 1000 / REQUESTS)
        if set(statuses) != {200}:
            raise RuntimeError(f"the service answered {sorted(set(statuses))}, not only 200")
    await pool.close()
    return samples
