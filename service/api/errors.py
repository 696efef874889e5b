"""The one error envelope of the API (JSON:API 1.1 error objects).

Every failure, validation errors and unexpected exceptions included, answers
`{"errors": [{"status", "title", "detail", "source"?}]}` with the media type
`application/vnd.api+json`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import MutableMapping, Sequence
from http import HTTPStatus
from typing import Any, ClassVar, Self
from weakref import WeakKeyDictionary

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

from service.api.encoding import encode
from service.connection_shares import FloodLog
from service.observability.logs import masked_path, safe_traceback
from service.problems import Conflicting, Invalid, Missing, Problem, json_pointer

JSONAPI_MEDIA_TYPE = "application/vnd.api+json"
logger = logging.getLogger("service.api.errors")


class JsonApiResponse(JSONResponse):
    media_type = JSONAPI_MEDIA_TYPE

    def render(self, content: Any) -> bytes:
        return encode(content)


class ErrorSource(BaseModel):
    pointer: str | None = None
    parameter: str | None = None


class ErrorObject(BaseModel):
    status: str
    title: str
    detail: str
    source: ErrorSource | None = None


class ErrorDocument(BaseModel):
    """The body of every error answer."""

    errors: list[ErrorObject]


# Every answer the API's routes can give besides their success, documented once
# for the OpenAPI document (and checked against it by tests/api/test_openapi_fuzzing.py).
# They name ErrorDocument's schema, which service/api/openapi.py adds to the
# document once: given as a `model`, FastAPI would build a validator and a
# serializer of it for each status of each route (about 850 in a worker, 2.6
# MiB of its memory: docs/benchmarks/api.notes.md), used by nothing but the
# document.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "description": description,
        "content": {JSONAPI_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ErrorDocument"}}},
    }
    for status, description in {
        400: "A query parameter or the body is malformed",
        401: "No API key, or one that is unknown or revoked",
        403: "The key's role may not do this",
        404: "No such object in the key's account",
        405: "The path does not take this method",
        406: "The Accept header admits JSON:API only with parameters this API does not support",
        409: "The change conflicts with existing data",
        413: "The body is larger than MAX_BODY_BYTES",
        415: "The body is not JSON, or its JSON:API media type has unsupported parameters",
        422: "The body is well-formed but invalid",
        429: "Too many requests for this key, or failed authentications from this address; "
        "retry after Retry-After seconds",
        500: "An unexpected error (logged with the request id)",
        503: "The schema is not at head yet, the database is unavailable or the request took "
        "too long; retry",
    }.items()
}


def matched_route(routes: Sequence[BaseRoute], scope: Scope) -> BaseRoute | None:
    """The route that serves this method and path, if one does: for an answer
    given before routing, to be counted and logged under the route it was for
    (`scope["route"]`), not as "unmatched"."""
    return next((route for route in routes if route.matches(scope)[0] is Match.FULL), None)


_SURROGATE = re.compile("[\ud800-\udfff]")


def printable(text: str) -> str:
    """Text that encodes as UTF-8: a client's lone surrogates (from JSON
    escapes) become U+FFFD, so an error about them can still be answered."""
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


def error_object(
    status: int, detail: str, *, pointer: str | None = None, parameter: str | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {
        "status": str(status),
        "title": HTTPStatus(status).phrase,
        "detail": printable(detail),
    }
    if pointer is not None:
        error["source"] = {"pointer": printable(pointer)}
    elif parameter is not None:
        error["source"] = {"parameter": printable(parameter)}
    return error


class ApiError(Exception):
    """An answer of JSON:API error objects: raise one of the named errors
    below, whose class gives the status."""

    status: ClassVar[int]

    def __init__(
        self,
        detail: str,
        *,
        pointer: str | None = None,
        parameter: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(detail)
        self.errors = [error_object(self.status, detail, pointer=pointer, parameter=parameter)]
        self.headers = headers

    @classmethod
    def at_pointers(cls, found: Sequence[tuple[str, str]]) -> Self:
        """One answer with an error object for each (pointer, detail) found in the body."""
        pointer, detail = found[0]
        error = cls(detail, pointer=pointer)
        error.errors = [error_object(cls.status, detail, pointer=at) for at, detail in found]
        return error


class BadRequest(ApiError):
    """A query parameter, or the body's JSON itself, is malformed."""

    status = 400


class Unauthorized(ApiError):
    """No credential, or one that is unknown or revoked."""

    status = 401


class Forbidden(ApiError):
    """The caller is known, but its role (or the service's settings) does not allow this."""

    status = 403


class NotFound(ApiError):
    """No such object in the caller's account (another account's is not found either)."""

    status = 404


class Conflict(ApiError):
    """The request contradicts the stored data, or the endpoint (a body of another type)."""

    status = 409


class UnprocessableContent(ApiError):
    """The body is well-formed JSON:API but its values are invalid."""

    status = 422


class TooManyRequests(ApiError):
    """A rate limit: retry after the Retry-After header's seconds."""

    status = 429


class ServiceUnavailable(ApiError):
    """The service cannot serve yet (or for now): retry after Retry-After."""

    status = 503


def error_response(
    status: int, errors: Sequence[dict[str, Any]], headers: dict[str, str] | None = None
) -> JsonApiResponse:
    return JsonApiResponse({"errors": list(errors)}, status_code=status, headers=headers)


def api_error_response(error: ApiError) -> JsonApiResponse:
    return error_response(error.status, error.errors, error.headers)


async def _api_error(_: Request, error: Exception) -> JsonApiResponse:
    assert isinstance(error, ApiError)
    return api_error_response(error)


async def _http_error(request: Request, error: Exception) -> JsonApiResponse:
    assert isinstance(error, StarletteHTTPException)
    headers = dict(error.headers) if error.headers else {}
    if error.status_code == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request))
    return error_response(
        error.status_code, [error_object(error.status_code, str(error.detail))], headers
    )


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route takes at this path (Starlette names only the
    first route's, and FastAPI makes one route per method): ask the routes."""
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]


# A parameter's problem found before the caller was checked (a dependency that
# FastAPI solves before the caller's, a filter a read parses before its one
# statement): told only once the caller is admitted (dependencies.checked_request),
# so a caller who may not read learns nothing of the API from it.
DEFERRED_PROBLEM = "service.deferred_problem"


def defer_problem(scope: MutableMapping[str, Any], problem: ApiError) -> None:
    """Keep `problem` to raise once the caller is known (the first one kept wins)."""
    scope.setdefault(DEFERRED_PROBLEM, problem)


# A read whose caller is checked in its own statement (service/api/dependencies.py
# `KeyRead`) leaves here how to check the caller alone, for a request refused
# before the read ran.
PENDING_ADMISSION = "service.pending_admission"


async def _validation_error(request: Request, error: Exception) -> JsonApiResponse:
    assert isinstance(error, RequestValidationError)
    from service.api.json_body import body_problem

    # FastAPI validates the route's parameters before its handler runs, so a
    # read refused here never checked its caller: check it first, so that a
    # caller who may not read learns nothing of the API from the refusal.
    if (admit := request.scope.get(PENDING_ADMISSION)) is not None:
        try:
            await admit()
        except ApiError as refusal:
            return api_error_response(refusal)
        except (DBAPIError, OSError) as failure:
            return await _database_error(request, failure)

    # A body that failed to parse reaches validation as None: answer why.
    if (problem := body_problem(request.scope)) is not None:
        return error_response(problem.status, problem.errors)
    errors = [_validation_error_object(problem) for problem in error.errors()]
    status = 400 if all(item["status"] == "400" for item in errors) else 422
    return error_response(status, errors)


def _validation_error_object(problem: dict[str, Any]) -> dict[str, Any]:
    if problem.get("type") == "json_invalid":
        reason = problem.get("ctx", {}).get("error", "")
        detail = f"the body is not valid JSON{': ' + reason if reason else ''}"
        return error_object(400, detail, pointer="")
    where, *path = problem.get("loc", ("body",))
    if where == "body":
        return error_object(422, problem["msg"], pointer=json_pointer(path))
    parameter = "/".join(str(part) for part in path)
    return error_object(400 if where == "query" else 422, problem["msg"], parameter=parameter)


# SQLSTATEs a request may meet in a healthy database, answered 503 to retry:
# its statement ran past REQUEST_STATEMENT_TIMEOUT (or was cancelled), or it
# lost a serialization conflict or a deadlock to another transaction.
_RETRY_LATER = {
    "57014": "the request took longer than its database time allows; retry, or ask for less",
    "40001": "the request conflicted with a concurrent change; retry",
    "40P01": "the request conflicted with a concurrent change; retry",
}


async def _database_error(request: Request, error: Exception) -> JsonApiResponse:
    """A database that is restarting or unreachable is a 503 to retry, not a 500."""
    from alembic_lockstep import describe_error, sqlstate

    from service.db.errors import is_transient

    detail = _RETRY_LATER.get(sqlstate(error) or "")
    if detail is None and not is_transient(error):
        return unexpected_error_response(request.method, masked_path(request.url.path), error)
    _floods().note(f"database error answered 503: {describe_error(error)}", _where(request))
    detail = detail or "the database is unavailable; retry shortly"
    return api_error_response(ServiceUnavailable(detail, headers={"Retry-After": "2"}))


async def _busy(request: Request, error: Exception) -> JsonApiResponse:
    """Every pooled connection stayed busy for the pool's whole timeout."""
    _floods().note("no database connection free: answered 503", _where(request))
    detail = "the service is busy: no database connection became free in time; retry"
    return api_error_response(ServiceUnavailable(detail, headers={"Retry-After": "2"}))


# Per event loop (a worker's): a database outage is answered 503 on every
# request, which logged a line each (about 1,600 in 7 s on one worker). The
# first of a kind is logged at once, then a count per interval.
_FLOOD_LOGS: WeakKeyDictionary[asyncio.AbstractEventLoop, FloodLog] = WeakKeyDictionary()


def _floods() -> FloodLog:
    loop = asyncio.get_running_loop()
    floods = _FLOOD_LOGS.get(loop)
    if floods is None:
        floods = _FLOOD_LOGS[loop] = FloodLog(loop, log=logger)
    return floods


def _where(request: Request) -> str:
    """The request as a summary names it; a key pasted into the path masked."""
    return f"{request.method} {masked_path(request.url.path)}"


def unexpected_error_response(method: str, path: str, error: BaseException) -> JsonApiResponse:
    """A 500, logged once with a traceback that holds no statement parameters."""
    logger.error(
        "unhandled error on %s %s: %s",
        method,
        path,
        type(error).__name__,
        extra={"error_trace": safe_traceback(error)},
    )
    return error_response(500, [error_object(500, "an unexpected error occurred")])


_PROBLEM_STATUS: tuple[tuple[type[Problem], int], ...] = (
    (Invalid, 422),
    (Missing, 404),
    (Conflicting, 409),
)


async def _problem(_: Request, error: Exception) -> JsonApiResponse:
    """What a domain core refuses (service/problems.py), in the one envelope."""
    assert isinstance(error, Problem)
    status = next((code for kind, code in _PROBLEM_STATUS if isinstance(error, kind)), 422)
    return error_response(
        status,
        [error_object(status, error.detail, pointer=error.pointer, parameter=error.parameter)],
    )


def install_error_handlers(app: FastAPI) -> None:
    """Answers for the errors handlers raise. Anything else is answered 500 by
    the request middleware (service/observability/middleware.py), which logs it once."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(Problem, _problem)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(OSError, _database_error)
    app.add_exception_handler(PoolTimeoutError, _busy)
