"""Request bodies of the API: their media type and their size, checked before
any handler runs (so a refused request writes nothing)."""

from __future__ import annotations

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import error_object, error_response

ACCEPTED_MEDIA_TYPES = {"application/vnd.api+json", "application/json"}
# The methods the API takes bodies with; others go on to routing (and its 405).
_WITH_BODY = {"POST", "PATCH"}


class BodyLimits:
    """Answers 415 for a body that is not JSON and 413 for one over `max_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int, routes: list[BaseRoute]):
        self.app, self.max_bytes, self.routes = app, max_bytes, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._takes_body(scope):
            await self.app(scope, receive, send)
            return
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope["headers"]
        }
        problem = self._header_problem(headers)
        if problem is None:
            body, too_large = await self._read(receive)
            if too_large:
                problem = (413, f"the request body is larger than {self.max_bytes} bytes")
        if problem is not None:
            response = error_response(problem[0], [error_object(problem[0], problem[1])])
            await response(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    def _takes_body(self, scope: Scope) -> bool:
        """Only a route that exists for this method has a body to check: any
        other request goes on to routing, which answers 404 or 405."""
        if scope["type"] != "http" or scope["method"] not in _WITH_BODY:
            return False
        return any(route.matches(scope)[0] is Match.FULL for route in self.routes)

    def _header_problem(self, headers: dict[str, str]) -> tuple[int, str] | None:
        media_type, _, parameters = headers.get("content-type", "").partition(";")
        if media_type.strip().lower() not in ACCEPTED_MEDIA_TYPES:
            return 415, "the body must be application/vnd.api+json (or application/json)"
        if media_type.strip().lower() == "application/vnd.api+json" and parameters.strip():
            names = {
                part.split("=")[0].strip().lower() for part in parameters.split(";") if part.strip()
            }
            if names - {"ext", "profile"}:
                return (
                    415,
                    "application/vnd.api+json takes no media type parameters but ext and profile",
                )
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return 413, f"the request body is larger than {self.max_bytes} bytes"
        return None

    async def _read(self, receive: Receive) -> tuple[bytes, bool]:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return b"", True
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks), False


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
