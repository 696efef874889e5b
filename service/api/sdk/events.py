"""`GET /api/v1/events`: config changes as Server-Sent Events, as the SDK's
`smplkit/_events.py` reads them.

`event: config_changed` / `config_deleted` with `data: {"id": <key>}`, and
`configs_changed` with `data: {}` (many configs at once, or events that may
have been missed). The stream starts with `retry:` (the client's reconnect
delay) and a comment, sends a comment at least every EVENTS_KEEPALIVE_SECONDS,
and ends when the key is revoked or its user deleted (announced like a config
write, so at once and before any later event; also checked at each keepalive,
for a revocation missed while the worker was not listening), when the worker
shuts down, or when the client leaves (Starlette's StreamingResponse watches
the ASGI receive channel for the disconnect, and the stream's slot is freed
as it is cancelled). The stream is registered before its headers
are sent, so a client that saw the headers sees every later write. It holds
no database connection: the key is authenticated in the request's transaction,
which ends before the stream starts.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import StreamingResponse
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.api.dependencies import Viewer
from service.api.errors import ServiceUnavailable, TooManyRequests
from service.api.routers import SDK_PATH, dialect_router
from service.api.sdk.event_hub import CLOSED, EventHub, NotListening, Stream, TooManyStreams
from service.state import state_of

router = dialect_router(SDK_PATH, tags=["events (smplkit SDK)"])
RETRY_MILLISECONDS = 2000
_KEY_VALID = text("SELECT 1 FROM api_keys WHERE id = :id AND revoked_at IS NULL")


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The event stream: it ends when the key is revoked or the "
            "worker stops, never by itself",
            "content": {
                "text/event-stream": {
                    "schema": {
                        "type": "string",
                        "description": "Server-Sent Events: config_changed, config_deleted "
                        "({id: key}), configs_changed ({})",
                    }
                }
            },
        }
    },
    summary="Config changes of the key's account, as Server-Sent Events (VIEWER)",
)
async def events(request: Request, caller: Viewer) -> StreamingResponse:
    state = state_of(request)
    hub: EventHub = state["events"]
    try:
        stream = await hub.open(caller.account_id, caller.key_id)
    except TooManyStreams as error:
        raise TooManyRequests(str(error), headers={"Retry-After": "60"}) from None
    except NotListening as error:
        raise ServiceUnavailable(
            f"live updates are not available on this worker now: {error}",
            headers={"Retry-After": "5"},
        ) from None
    return StreamingResponse(
        _frames(hub, stream, state["engine"], state["settings"].events_keepalive_seconds),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _frames(
    hub: EventHub, stream: Stream, engine: AsyncEngine, keepalive: float
) -> AsyncIterator[bytes]:
    try:
        yield f"retry: {RETRY_MILLISECONDS}\n: connected\n\n".encode()
        checked = time.monotonic()
        while True:
            try:
                event = await asyncio.wait_for(stream.queue.get(), keepalive)
            except TimeoutError:
                event = None
            if event is CLOSED:
                return
            if time.monotonic() - checked >= keepalive:
                if not await _key_valid(engine, stream.key_id):
                    return
                checked = time.monotonic()
            if event is None:
                yield b": keepalive\n\n"
            else:
                yield f"event: {event.name}\ndata: {json.dumps(event.data)}\n\n".encode()
    finally:
        hub.forget(stream)


async def _key_valid(engine: AsyncEngine, key_id: uuid.UUID) -> bool:
    async with engine.connect() as connection:
        return (await connection.scalar(_KEY_VALID, {"id": key_id})) is not None
