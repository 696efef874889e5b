"""Benchmark peers only: two plain FastAPI apps answering "get one config"
with the baseline's JSON (bench/baseline_app.py), to show what the framework
itself costs and what one round trip gains, in the same run as the service:

- `four_round_trips`: one `yield` dependency that opens a transaction and
  checks the key (BEGIN + key lookup), the config read in the endpoint, and
  the COMMIT when the dependency exits, before the answer is sent (the
  baseline's four round trips, FastAPI's dependency shape);
- `one_statement`: the key check and the config read in one statement, no
  explicit transaction (a single statement is atomic and sees one snapshot):
  no row means a bad key, a row with a null config means 404.

Both use an asyncpg pool of DATABASE_POOL_SIZE connections, as the baseline."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from bench.baseline_app import CALLER, COLUMNS, ONE, JsonApi, config, error, json_codecs

ONE_STATEMENT = f"""
WITH who AS (
    SELECT k.account_id FROM api_keys AS k JOIN users AS u ON u.id = k.user_id
     WHERE k.secret_hash = $1 AND k.revoked_at IS NULL
)
SELECT who.account_id AS caller_account, c.*
  FROM who LEFT JOIN LATERAL (
       SELECT {COLUMNS} FROM configs WHERE id = $2 AND account_id = who.account_id
  ) AS c ON true
"""


class _Refused(Exception):
    """The key is missing, not valid or revoked: answered 401."""


def _digest(request: Request) -> bytes | None:
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key:
        return None
    return hashlib.sha256(key.strip().encode()).digest()


async def _caller_in_transaction(
    request: Request,
) -> AsyncIterator[tuple[asyncpg.Connection, asyncpg.Record]]:
    digest = _digest(request)
    if digest is None:
        raise _Refused
    async with request.app.state.pool.acquire() as connection, connection.transaction():
        who = await connection.fetchrow(CALLER, digest)
        if who is None:
            raise _Refused
        yield connection, who


Caller = Annotated[
    tuple[asyncpg.Connection, asyncpg.Record], Depends(_caller_in_transaction, scope="function")
]


def _app(pool_size: int) -> FastAPI:
    url = os.environ["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(
            url, min_size=pool_size, max_size=pool_size, init=json_codecs
        )
        yield
        await app.state.pool.close()

    app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)

    @app.exception_handler(_Refused)
    async def refused(_: Request, __: Exception) -> Response:
        return error(401, "Unauthorized", "the API key is not valid or was revoked")

    @app.get("/readyz")
    async def ready() -> Response:
        return JSONResponse({"status": "ready"})

    return app


def _found(row: Any) -> Response:
    if row is None:
        return error(404, "Not Found", "no such config")
    return JsonApi({"data": config(row), "jsonapi": {"version": "1.1"}})


def four_round_trips() -> FastAPI:
    app = _app(int(os.environ.get("DATABASE_POOL_SIZE", "10")))

    @app.get("/v1/configs/{config_id}")
    async def get_one(config_id: uuid.UUID, caller: Caller) -> Response:
        connection, who = caller
        return _found(await connection.fetchrow(ONE, config_id, who["account_id"]))

    return app


def one_statement() -> FastAPI:
    app = _app(int(os.environ.get("DATABASE_POOL_SIZE", "10")))

    @app.get("/v1/configs/{config_id}")
    async def get_one(config_id: uuid.UUID, request: Request) -> Response:
        digest = _digest(request)
        row = (
            None
            if digest is None
            else await app.state.pool.fetchrow(ONE_STATEMENT, digest, config_id)
        )
        if row is None:
            raise _Refused
        return _found(row if row["id"] is not None else None)

    return app
