"""Content negotiation of the API (JSON:API 1.1) and the size of request bodies,
checked before any handler runs, so a refused request writes nothing.

- Accept: when it names the JSON:API media type only with parameters other
  than profile (or with an extension, none of which this API supports): 406.
- Content-Type of a body: JSON (application/vnd.api+json or
  application/json), the JSON:API type with no parameters but profile: else 415.
- A body larger than MAX_BODY_BYTES: 413.
"""

from __future__ import annotations

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import JSONAPI_MEDIA_TYPE, error_object, error_response, matched_route
from service.http_protocol import BODY_TIMED_OUT

ACCEPTED_MEDIA_TYPES = {JSONAPI_MEDIA_TYPE, "application/json"}
# The methods the API takes bodies with; others go on to routing (and its 405).
_WITH_BODY = {"POST", "PATCH", "PUT"}
# /v1, and the smplkit SDK's dialect under /api/v1.
_API_PREFIXES = ("/v1", "/api/v1")
# Media type parameters JSON:API allows; this API supports no extension (ext),
# so only profile is accepted (and profiles are ignored, as the spec permits).
_ALLOWED_PARAMETERS = {"profile"}
# In Accept, "q" weighs a media range; it is not a parameter of the media type.
_ACCEPT_WEIGHT = "q"


class ContentNegotiation:
    """Answers 406, 415 and 413 for the API's routes (under /v1 and /api/v1)."""

    def __init__(self, app: ASGIApp, max_bytes: int, routes: list[BaseRoute]):
        self.app, self.max_bytes, self.routes = app, max_bytes, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(_API_PREFIXES):
            await self.app(scope, receive, send)
            return
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope["headers"]
        }
        problem = _accept_problem(headers.get("accept", ""))
        # Only a route that exists for this method has a body to check: any
        # other request goes on to routing, which answers 404 or 405.
        route = matched_route(self.routes, scope) if scope["method"] in _WITH_BODY else None
        if problem is None and route is not None:
            problem = self._header_problem(headers)
            if problem is None:
                body, outcome = await self._read(scope, receive)
                if outcome == "gone":
                    scope["route"] = route  # a client that left (499), under its route
                    return
                if outcome == "too large":
                    problem = (413, f"the request body is larger than {self.max_bytes} bytes")
                elif outcome == "too slow":
                    problem = (408, str(scope[BODY_TIMED_OUT]))
                else:
                    receive = _replay(body, receive)
        if problem is not None:
            # Counted and logged under the route it was for, not "unmatched".
            if (route := route or matched_route(self.routes, scope)) is not None:
                scope["route"] = route
            response = error_response(problem[0], [error_object(problem[0], problem[1])])
            if problem[0] == 408:
                # The rest of the body may still come: nothing on this
                # connection can be read as a request any more.
                response.headers["Connection"] = "close"
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _header_problem(self, headers: dict[str, str]) -> tuple[int, str] | None:
        media_type, parameters = _media_type(headers.get("content-type", ""))
        if media_type not in ACCEPTED_MEDIA_TYPES:
            return 415, "the body must be application/vnd.api+json (or application/json)"
        if media_type == JSONAPI_MEDIA_TYPE and set(parameters) - _ALLOWED_PARAMETERS:
            return (
                415,
                "application/vnd.api+json takes no media type parameter but profile here "
                "(this API supports no extension)",
            )
        length = headers.get("content-length", "")
        # isdigit() alone admits "²" and other digits int() refuses.
        if length.isascii() and length.isdigit() and int(length) > self.max_bytes:
            return 413, f"the request body is larger than {self.max_bytes} bytes"
        return None

    async def _read(self, scope: Scope, receive: Receive) -> tuple[bytes, str]:
        """The whole body, or "too large", or "gone" when the client left before
        sending all of it (a partial body must never reach a handler), or "too
        slow" once the server's HTTP_BODY_TIMEOUT has passed (the protocol,
        service/http_protocol.py, marks the scope and wakes this read)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"", "gone"
            if BODY_TIMED_OUT in scope:
                return b"", "too slow"
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return b"", "too large"
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), "complete"


def _media_type(value: str) -> tuple[str, list[str]]:
    """The media type of a header value, lower-cased, and its parameters' names."""
    media_type, *parameters = value.split(";")
    names = [part.split("=")[0].strip().lower() for part in parameters if part.strip()]
    return media_type.strip().lower(), names


def _accept_problem(accept: str) -> tuple[int, str] | None:
    """JSON:API: 406 when every JSON:API media range in Accept carries a media
    type parameter this API cannot honour."""
    if JSONAPI_MEDIA_TYPE not in accept.lower():
        return None
    ranges = [_media_type(item) for item in accept.split(",")]
    jsonapi = [
        set(names) - {_ACCEPT_WEIGHT}
        for media_type, names in ranges
        if media_type == JSONAPI_MEDIA_TYPE
    ]
    if jsonapi and all(names - _ALLOWED_PARAMETERS for names in jsonapi):
        return (
            406,
            "Accept admits application/vnd.api+json only with media type parameters this API "
            "does not support (it supports no extension; profile is accepted)",
        )
    return None


def _replay(body: bytes, original: Receive) -> Receive:
    """Hand the buffered body to the app, then pass on what the client sends next."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return await original()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive
