"""The one error envelope of the API (JSON:API 1.1 error objects).

Every failure, validation errors and unexpected exceptions included, answers
`{"errors": [{"status", "title", "detail", "source"?}]}` with the media type
`application/vnd.api+json`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

JSONAPI_MEDIA_TYPE = "application/vnd.api+json"
logger = logging.getLogger("service.errors")


class JsonApiResponse(JSONResponse):
    media_type = JSONAPI_MEDIA_TYPE


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
# for the OpenAPI document (and checked against it by tests/test_openapi_fuzzing.py).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "model": ErrorDocument,
        "description": description,
        "content": {JSONAPI_MEDIA_TYPE: {}},
    }
    for status, description in {
        400: "A query parameter or the body is malformed",
        401: "No API key, or one that is unknown or revoked",
        403: "The key's role may not do this",
        404: "No such object in the key's account",
        405: "The path does not take this method",
        409: "The change conflicts with existing data",
        413: "The body is larger than MAX_BODY_BYTES",
        415: "The body is not JSON",
        422: "The body is well-formed but invalid",
        500: "An unexpected error (logged with the request id)",
        503: "The schema is not at head yet, or the database is unavailable; retry",
    }.items()
}


def error_object(
    status: int, detail: str, *, pointer: str | None = None, parameter: str | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {
        "status": str(status),
        "title": HTTPStatus(status).phrase,
        "detail": detail,
    }
    if pointer is not None:
        error["source"] = {"pointer": pointer}
    elif parameter is not None:
        error["source"] = {"parameter": parameter}
    return error


class ApiError(Exception):
    """Raise to answer with one or more JSON:API error objects."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        pointer: str | None = None,
        parameter: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(detail)
        self.status = status
        self.errors = [error_object(status, detail, pointer=pointer, parameter=parameter)]
        self.headers = headers


def error_response(
    status: int, errors: Sequence[dict[str, Any]], headers: dict[str, str] | None = None
) -> JsonApiResponse:
    return JsonApiResponse({"errors": list(errors)}, status_code=status, headers=headers)


async def _api_error(_: Request, error: Exception) -> JsonApiResponse:
    assert isinstance(error, ApiError)
    return error_response(error.status, error.errors, error.headers)


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


async def _validation_error(_: Request, error: Exception) -> JsonApiResponse:
    assert isinstance(error, RequestValidationError)
    errors = [_validation_error_object(problem) for problem in error.errors()]
    status = 400 if all(item["status"] == "400" for item in errors) else 422
    return error_response(status, errors)


def _validation_error_object(problem: dict[str, Any]) -> dict[str, Any]:
    if problem.get("type") == "json_invalid":
        reason = problem.get("ctx", {}).get("error", "")
        return error_object(400, f"the body is not valid JSON{': ' + reason if reason else ''}")
    where, *path = problem.get("loc", ("body",))
    path_text = "/".join(str(part) for part in path)
    if where == "body":
        return error_object(422, problem["msg"], pointer="/" + path_text)
    return error_object(400 if where == "query" else 422, problem["msg"], parameter=path_text)


async def _database_error(request: Request, error: Exception) -> JsonApiResponse:
    """A database that is restarting or unreachable is a 503 to retry, not a 500."""
    from service.errors_database import describe_error, is_transient

    if not is_transient(error):
        return await _unexpected_error(request, error)
    logger.warning(
        "database unavailable on %s %s: %s", request.method, request.url.path, describe_error(error)
    )
    return error_response(
        503, [error_object(503, "the database is unavailable; retry shortly")], {"Retry-After": "2"}
    )


async def _unexpected_error(request: Request, error: Exception) -> JsonApiResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, [error_object(500, "an unexpected error occurred")])


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(OSError, _database_error)
    app.add_exception_handler(Exception, _unexpected_error)
