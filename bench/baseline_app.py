"""Benchmark baseline only: a minimal Starlette + asyncpg app answering the
API benchmark's four requests with the same queries (API key lookup, then the
config query, in one transaction; a create also stores its items' types and
notifies the config event listeners, as the service does) and the same JSON as
the service. No validation beyond what the requests need, no middleware, no ORM
or Core."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import asyncpg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

CALLER = """
SELECT k.id AS key_id, k.account_id, k.user_id, k.secret_hash, u.role
  FROM api_keys AS k JOIN users AS u ON u.id = k.user_id
 WHERE k.secret_hash = $1 AND k.revoked_at IS NULL
"""
COLUMNS = (
    "id, account_id, parent_id, key, name, description, items, environments, created_at, updated_at"
)
ONE = f"SELECT {COLUMNS} FROM configs WHERE id = $1 AND account_id = $2"
PAGE = f"SELECT {COLUMNS} FROM configs WHERE account_id = $1 ORDER BY created_at, id LIMIT $2"
CHAIN = """
WITH RECURSIVE chain AS (
    SELECT id, parent_id, items, environments, 0 AS depth FROM configs WHERE id = $1 AND account_id = $2
    UNION ALL
    SELECT c.id, c.parent_id, c.items, c.environments, chain.depth + 1
      FROM configs AS c JOIN chain ON c.id = chain.parent_id WHERE chain.depth < 32
)
SELECT id, parent_id, items, environments, depth FROM chain ORDER BY depth DESC
"""
KNOWN_ENVIRONMENT = "SELECT count(*) FROM environments WHERE account_id = $1 AND key = $2"
INSERT = f"""
INSERT INTO configs (account_id, parent_id, key, name, description, items, environments,
                     item_definitions)
VALUES ($1, NULL, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}
"""
# What the service announces to the SDK's event streams with every config write.
NOTIFY = "SELECT pg_notify('config_events', $1)"
JSONAPI = "application/vnd.api+json"


class JsonApi(JSONResponse):
    media_type = JSONAPI

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


def timestamp(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def config(row: asyncpg.Record) -> dict[str, Any]:
    attributes = {
        name: timestamp(row[name]) if isinstance(row[name], datetime) else row[name]
        for name in (
            "key",
            "name",
            "description",
            "items",
            "environments",
            "created_at",
            "updated_at",
        )
    }
    parent = row["parent_id"]
    return {
        "type": "configs",
        "id": str(row["id"]),
        "attributes": attributes,
        "links": {"self": f"/v1/configs/{row['id']}"},
        "relationships": {
            "parent": {"data": {"type": "configs", "id": str(parent)} if parent else None}
        },
    }


def error(status: int, title: str, detail: str) -> JsonApi:
    return JsonApi({"errors": [{"status": str(status), "title": title, "detail": detail}]}, status)


async def caller(connection: asyncpg.Connection, request: Request) -> asyncpg.Record | None:
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key:
        return None
    return await connection.fetchrow(CALLER, hashlib.sha256(key.strip().encode()).digest())


async def get_one(request: Request) -> Response:
    async with request.app.state.pool.acquire() as connection, connection.transaction():
        who = await caller(connection, request)
        if who is None:
            return error(401, "Unauthorized", "the API key is not valid or was revoked")
        row = await connection.fetchrow(ONE, request.path_params["config_id"], who["account_id"])
    if row is None:
        return error(404, "Not Found", "no such config")
    return JsonApi({"data": config(row), "jsonapi": {"version": "1.1"}})


async def list_page(request: Request) -> Response:
    size = int(request.query_params.get("page[size]", "20"))
    async with request.app.state.pool.acquire() as connection, connection.transaction():
        who = await caller(connection, request)
        if who is None:
            return error(401, "Unauthorized", "the API key is not valid or was revoked")
        rows = await connection.fetch(PAGE, who["account_id"], size)
    self_link = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    next_link = None
    if len(rows) == size:
        last = rows[-1]
        cursor = json.dumps(
            [last["created_at"].astimezone(UTC).isoformat(), str(last["id"])]
        ).encode()
        query = dict(request.query_params)
        query["page[after]"] = base64.urlsafe_b64encode(cursor).decode().rstrip("=")
        next_link = f"{request.url.path}?{urlencode(query)}"
    return JsonApi(
        {
            "data": [config(row) for row in rows],
            "links": {"self": self_link, "next": next_link},
            "meta": {"page": {"size": size}},
            "jsonapi": {"version": "1.1"},
        }
    )


async def resolved(request: Request) -> Response:
    environment = request.query_params.get("environment", "")
    config_id = request.path_params["config_id"]
    async with request.app.state.pool.acquire() as connection, connection.transaction():
        who = await caller(connection, request)
        if who is None:
            return error(401, "Unauthorized", "the API key is not valid or was revoked")
        chain = await connection.fetch(CHAIN, config_id, who["account_id"])
        known = await connection.fetchval(KNOWN_ENVIRONMENT, who["account_id"], environment)
    if not chain:
        return error(404, "Not Found", "no such config")
    if not known:
        return error(400, "Bad Request", "no such environment")
    items: dict[str, Any] = {}
    for row in chain:
        items.update(row["items"])
        items.update(row["environments"].get(environment, {}))
    return JsonApi(
        {
            "data": {
                "type": "resolved-configs",
                "id": str(config_id),
                "attributes": {"environment": environment, "items": items},
                "relationships": {"config": {"data": {"type": "configs", "id": str(config_id)}}},
            },
            "jsonapi": {"version": "1.1"},
            "meta": {"chain": [str(row["id"]) for row in chain]},
        }
    )


def item_type(value: Any) -> str:
    """The type the service infers for a new item's value."""
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int | float):
        return "NUMBER"
    return "STRING" if isinstance(value, str) else "JSON"


async def create(request: Request) -> Response:
    attributes = json.loads(await request.body())["data"]["attributes"]
    items = attributes.get("items", {})
    async with request.app.state.pool.acquire() as connection, connection.transaction():
        who = await caller(connection, request)
        if who is None:
            return error(401, "Unauthorized", "the API key is not valid or was revoked")
        try:
            row = await connection.fetchrow(
                INSERT,
                who["account_id"],
                attributes["key"],
                attributes["name"],
                attributes.get("description"),
                items,
                attributes.get("environments", {}),
                {k: {"type": item_type(v), "description": None} for k, v in items.items()},
            )
        except asyncpg.UniqueViolationError:
            return error(409, "Conflict", "a config with this key already exists")
        event = {"account": str(who["account_id"]), "event": "config_changed", "id": row["key"]}
        await connection.execute(NOTIFY, json.dumps(event))
    return JsonApi({"data": config(row), "jsonapi": {"version": "1.1"}}, 201)


async def json_codecs(connection: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await connection.set_type_codec(
            name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


def create_app() -> Starlette:
    url = os.environ["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://")
    size = int(os.environ.get("DATABASE_POOL_SIZE", "10"))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(
            url, min_size=size, max_size=size, init=json_codecs
        )
        yield
        await app.state.pool.close()

    async def ready(_: Request) -> Response:
        return JSONResponse({"status": "ready"})

    return Starlette(
        routes=[
            Route("/readyz", ready),
            Route("/v1/configs", list_page),
            Route("/v1/configs", create, methods=["POST"]),
            Route("/v1/configs/{config_id:uuid}", get_one),
            Route("/v1/configs/{config_id:uuid}/resolved", resolved),
        ],
        lifespan=lifespan,
    )
