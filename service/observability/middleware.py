"""Per request: an id, a log event, metrics, headers every answer carries, and
the one answer (500, logged once) for an error nothing else handled."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import ServiceUnavailable, api_error_response, unexpected_error_response
from service.observability.logs import REQUEST_LOGGER, masked_path, request_id
from service.observability.metrics import Metrics

logger = logging.getLogger(REQUEST_LOGGER)
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Probes are polled constantly: logged at DEBUG only.
_QUIET_PATHS = {"/livez", "/readyz", "/metrics"}
# The status logged for a request whose client left before any answer (nginx's).
CLIENT_CLOSED = 499
# Every answer is for one key or the operator (or says nothing worth caching):
# no shared cache may keep it, and no browser may guess its type.
_ALWAYS = ((b"x-content-type-options", b"nosniff"),)
_UNLESS_SET = ((b"cache-control", b"no-store"),)


# The answer to a request still running when a graceful shutdown ends.
_STOPPING = api_error_response(
    ServiceUnavailable(
        "the service stopped before this request was done; retry",
        headers={"Retry-After": "1"},
    )
)

# An event stream lasts as long as its client stays: not a request whose
# duration the request metrics should count.
STREAM_ROUTES = frozenset({"/api/v1/events"})


class RequestObservability:
    """Takes X-Request-ID from the client (when well formed) or makes one, returns
    it, logs one event per request and counts it by route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        current = incoming if _VALID_REQUEST_ID.match(incoming) else os.urandom(16).hex()
        token = request_id.set(current)
        status = CLIENT_CLOSED
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                _add_headers(message, current)
            await send(message)

        # A key pasted into a URL by mistake must not reach the logs.
        path = masked_path(scope["path"])
        try:
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            if status != CLIENT_CLOSED:
                raise
            # The server is stopping and its graceful shutdown is over: uvicorn
            # cancels what still runs, and would answer its own plain-text 500.
            # The request's connection is closed (its transaction rolled back)
            # in the background meanwhile (service/api/json_body.py).
            await _STOPPING(scope, receive, send_with_id)
        except Exception as error:
            if status != CLIENT_CLOSED:
                # The answer has begun: all that is left is to end the connection.
                raise
            response = unexpected_error_response(scope["method"], path, error)
            await response(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = route_template(scope)
            if route not in STREAM_ROUTES:
                self.metrics.observe(scope["method"], route, status, elapsed)
            level = logging.DEBUG if path in _QUIET_PATHS else logging.INFO
            if logger.isEnabledFor(level):
                # Made and handled as Logger.log would, without its search of
                # the stack for the caller's file and line, which no format
                # shows: a tenth of the record's cost.
                logger.handle(
                    logger.makeRecord(
                        logger.name,
                        level,
                        __file__,
                        0,
                        "%s %s %d %.1fms",
                        (scope["method"], path, status, elapsed * 1000),
                        None,
                        extra={
                            "request_id": current,
                            "method": scope["method"],
                            "path": path,
                            "route": route,
                            "status": status,
                            "duration_ms": round(elapsed * 1000, 2),
                        },
                    )
                )
            request_id.reset(token)


def _header(scope: Scope, name: bytes) -> str:
    """The first value of header `name` (lower case), "" when absent."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return ""


def _add_headers(message: Message, current_request_id: str) -> None:
    headers = MutableHeaders(scope=message)
    headers.append("X-Request-ID", current_request_id)
    raw = message["headers"]
    raw.extend(_ALWAYS)
    if "cache-control" not in headers:
        raw.extend(_UNLESS_SET)


def route_template(scope: Scope) -> str:
    """The matched route's template with its router prefixes ("/v1/users/{user_id}").

    The route object of an included router knows only its own part of the
    template; the prefixes are the leading segments of the real path.
    """
    template: str | None = getattr(scope.get("route"), "path", None)
    if template is None:
        return "unmatched"
    segments = scope["path"].split("/")
    own = template.count("/")
    prefix = "/".join(segments[: max(1, len(segments) - own)])
    return prefix + template if template.startswith("/") else template
