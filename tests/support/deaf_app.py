"""An app that never reads a request's body and answers only after a minute:
for the HTTP protocol's own 408 (service/http_protocol.py), which answers a
slow body when the app, woken to answer it, does not within
APP_ANSWER_SECONDS. The service's own routes always answer; this app stands
for one stuck elsewhere while its body stops arriving. Its lifespan gives
the protocol the settings of the environment (HTTP_BODY_TIMEOUT, say), as
the service's does."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from settings import Settings

Message = MutableMapping[str, Any]
ANSWER_AFTER = 60.0


def create_app() -> Callable[..., Awaitable[None]]:
    async def app(
        scope: Message,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":
            await receive()
            scope["state"]["settings"] = Settings()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        await asyncio.sleep(ANSWER_AFTER)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"late"})

    return app
