"""Request bodies as PostgreSQL can store them, refused only once the caller is known.

Python's json module accepts what PostgreSQL refuses in text and jsonb: NUL
characters, lone surrogates (from "\\ud800" escapes), NaN and Infinity, and
numbers beyond a double ("1e400" becomes infinity). Such a body would fail
deep in a handler, at the database, as a 500. Here every body is parsed
strictly and walked once; what is wrong is kept, with its JSON Pointer, and
raised as a 400 or 422 after authentication (`body_problem`, read by
service/api/dependencies.py's `checked_request`), so an
anonymous caller learns nothing about the API's schema from its bodies.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.types import Scope

from service.api.errors import ApiError, BadRequest, UnprocessableContent
from service.problems import json_pointer

# Deeper bodies are refused before anything walks them further; the JSON
# values a resource stores have their own, smaller limit (service/api/limits.py).
MAX_BODY_DEPTH = 64
# At most this many problems are reported for one body.
MAX_PROBLEMS = 20
# Integers longer than this are refused rather than converted (Python's own
# limit, 4300 digits, raises deep inside the parser).
MAX_INTEGER_DIGITS = 1000
_SCOPE_KEY = "service.body_problem"
_SURROGATE = re.compile("[\ud800-\udfff]")
_LARGEST_DOUBLE = int(sys.float_info.max)


class _Unrepresentable:
    """Stands in for a number a double cannot hold (NaN, Infinity, 1e400, 10**400, 1e-400)."""

    def __init__(self, text: str):
        self.text = text


def _float(text: str) -> float | _Unrepresentable:
    value = float(text)
    if not math.isfinite(value) or (value == 0.0 and _has_nonzero_digit(text)):
        # Beyond a double, or so small it would silently become 0 (1e-400).
        return _Unrepresentable(text)
    return value


def _has_nonzero_digit(text: str) -> bool:
    mantissa = text.lower().partition("e")[0]
    return any(digit in mantissa for digit in "123456789")


def _integer(text: str) -> int | _Unrepresentable:
    if len(text) > MAX_INTEGER_DIGITS:
        return _Unrepresentable(text)
    value = int(text)
    # Beyond a double, as "1e400" is: clients reading the document as JSON
    # numbers (doubles) could not hold it.
    return _Unrepresentable(text) if abs(value) > _LARGEST_DOUBLE else value


class DuplicateMember(ValueError):
    """An object names one member twice: which value was meant is not known."""

    def __init__(self, name: str) -> None:
        super().__init__(f"the member name {name!r} appears twice in one object")


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) < len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise DuplicateMember(name)
            seen.add(name)
    return found


def parse_json(raw: bytes | str) -> Any:
    """Parse JSON, keeping unrepresentable numbers as markers for `problems`.

    Bytes must be UTF-8 (RFC 8259): json.loads would also take UTF-16 and
    UTF-32. Encoded surrogates are let through to be named by `problems`.
    Raises ValueError (json.JSONDecodeError, UnicodeDecodeError,
    DuplicateMember) or RecursionError for text that is not JSON at all.
    """
    text = raw.decode("utf-8", "surrogatepass") if isinstance(raw, bytes) else raw
    return json.loads(
        text,
        parse_constant=_Unrepresentable,
        parse_float=_float,
        parse_int=_integer,
        object_pairs_hook=_unique_members,
    )


def text_problem(text: str) -> str | None:
    """Why PostgreSQL would refuse this string, or None."""
    if "\x00" in text:
        return "contains a NUL character (\\u0000), which cannot be stored"
    if not text.isascii() and _SURROGATE.search(text):
        return "contains a lone UTF-16 surrogate, which is not a character"
    return None


def problems(document: Any, *, max_depth: int = MAX_BODY_DEPTH) -> list[tuple[str, str]]:
    """(pointer, message) for each value PostgreSQL cannot store, depth-first."""
    found: list[tuple[str, str]] = []
    pending: list[tuple[Any, tuple[str, ...]]] = [(document, ())]
    while pending and len(found) < MAX_PROBLEMS:
        value, path = pending.pop()
        if len(path) > max_depth:
            found.append((json_pointer(path), f"is nested deeper than {max_depth} levels"))
        elif isinstance(value, str):
            if problem := text_problem(value):
                found.append((json_pointer(path), problem))
        elif isinstance(value, _Unrepresentable):
            found.append(
                (json_pointer(path), f"{value.text[:40]} is not a number a double can hold")
            )
        elif isinstance(value, dict):
            for name, item in reversed(value.items()):
                if problem := text_problem(name):
                    found.append((json_pointer((*path, name)), f"the member name {problem}"))
                else:
                    pending.append((item, (*path, name)))
        elif isinstance(value, list):
            pending.extend((item, (*path, str(n))) for n, item in reversed(list(enumerate(value))))
    return found


class StrictJsonRequest(Request):
    """A request whose JSON body is parsed by `parse_json`; a body that fails
    is remembered in the scope, and the handler sees None instead."""

    async def json(self) -> Any:
        try:
            document = parse_json(await self.body())
        except (ValueError, RecursionError) as error:
            _remember(self.scope, BadRequest(_not_json(error), pointer=""))
            return None
        found = problems(document)
        if found:
            _remember(self.scope, UnprocessableContent.at_pointers(found))
        return document


def _not_json(error: Exception) -> str:
    if isinstance(error, RecursionError):
        return "the body is not valid JSON: it is nested too deeply"
    if isinstance(error, UnicodeDecodeError):
        return "the body is not valid JSON: it is not UTF-8"
    if isinstance(error, DuplicateMember):
        return f"the body is ambiguous: {error}"
    reason = error.msg if isinstance(error, json.JSONDecodeError) else str(error)
    return f"the body is not valid JSON: {reason}"


def _remember(scope: Scope, problem: ApiError) -> None:
    scope[_SCOPE_KEY] = problem


def body_problem(scope: Scope) -> ApiError | None:
    """The body's problem found while parsing it, if any."""
    problem: ApiError | None = scope.get(_SCOPE_KEY)
    return problem


# What a request's dependencies opened for its handler (service/api/dependencies.py:
# a read's connection), closed by its route once the handler is done.
_CLOSERS = "service.closers"
Closer = Callable[[BaseException | None], Coroutine[Any, Any, None]]


def close_when_handled(scope: Scope, close: Closer) -> None:
    """Have `close` called once the route's handler has returned (with None)
    or raised (with the error), before the answer is sent: a `JsonApiRoute`
    does it. A dependency with `yield` would do the same at a cost per request
    that shows on a point read (FastAPI's exit stack, a shielded exit:
    docs/benchmarks/api.notes.md)."""
    closers: list[Closer] | None = scope.get(_CLOSERS)
    if closers is None:
        raise RuntimeError("close_when_handled needs a JsonApiRoute: nothing else would close")
    closers.append(close)


# Closes running after their request was cancelled, kept until they end.
_CLOSING: set[asyncio.Task[None]] = set()


def _in_background(close: Coroutine[Any, Any, None]) -> None:
    task = asyncio.ensure_future(close)
    _CLOSING.add(task)
    task.add_done_callback(_CLOSING.discard)


async def _close_all(closers: list[Closer], error: BaseException | None) -> None:
    """Every close, the last opened first, whatever one of them raises: after
    a close that fails (a commit), the rest are told of that error (they roll
    back), and it is raised once all have run."""
    failed: BaseException | None = None
    for close in reversed(closers):
        try:
            await close(error or failed)
        except BaseException as raised:
            failed = failed or raised
    if failed is not None:
        raise failed


class JsonApiRoute(APIRoute):
    """Routes whose JSON bodies go through `StrictJsonRequest`, and which close
    what their dependencies opened (`close_when_handled`)."""

    async def prepare(self, request: Request) -> None:
        """Run before FastAPI reads the request's body or solves its handler's
        parameters; what it opens is closed as the dependencies' is."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            closers: list[Closer] = []
            request.scope[_CLOSERS] = closers
            try:
                await self.prepare(request)
                response = await handler(StrictJsonRequest(request.scope, request.receive))
            except asyncio.CancelledError as error:
                # The server is stopping: uvicorn cancels what outlives its
                # graceful shutdown and exits soon after, maybe before a
                # rollback's round trip. The request is answered at once
                # (service/observability/middleware.py) and closed meanwhile;
                # a transaction whose session ends is rolled back all the same.
                for close in reversed(closers):
                    _in_background(close(error))
                raise
            except BaseException as error:
                with anyio.CancelScope(shield=True):
                    await _close_all(closers, error)
                raise
            finally:
                # The closers may hold what holds the scope: not kept past here.
                request.scope.pop(_CLOSERS, None)
            # A close that fails (a commit) is the answer instead.
            await _close_all(closers, None)
            return response

        return strict
