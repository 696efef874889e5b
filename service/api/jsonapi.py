"""JSON:API 1.1 documents: request bodies, resource objects, lists with cursors."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from urllib.parse import urlencode

from fastapi import Request
from pydantic import BaseModel, ConfigDict

from service.errors import ApiError, JsonApiResponse

A = TypeVar("A", bound=BaseModel)

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


class Strict(BaseModel):
    """Refuses unknown members: a typo must not be silently ignored."""

    model_config = ConfigDict(extra="forbid")


class Identifier(Strict):
    type: str
    id: uuid.UUID


class ToOne(Strict):
    data: Identifier | None


class ResourceInput(Strict, Generic[A]):
    type: str
    id: uuid.UUID | None = None
    attributes: A
    relationships: dict[str, ToOne] | None = None


class Document(Strict, Generic[A]):
    """A request body: `{"data": {"type", "attributes", "relationships"?}}`."""

    data: ResourceInput[A]


def expect_type(
    document: Document[Any], resource_type: str, resource_id: uuid.UUID | None = None
) -> None:
    """JSON:API answers 409 when the body's type (or id) is not the endpoint's."""
    if document.data.type != resource_type:
        raise ApiError(409, f"expected type {resource_type!r}", pointer="/data/type")
    if resource_id is not None and document.data.id not in (None, resource_id):
        raise ApiError(409, "the id in the body differs from the id in the URL", pointer="/data/id")


def changed_attributes(document: Document[Any], not_null: Iterable[str]) -> dict[str, Any]:
    """The attributes a PATCH sets; null is refused for those that cannot be null."""
    values: dict[str, Any] = document.data.attributes.model_dump(exclude_unset=True)
    for name in not_null:
        if name in values and values[name] is None:
            raise ApiError(422, f"{name} cannot be null", pointer=f"/data/attributes/{name}")
    return values


def related_id(
    document: Document[Any], name: str, resource_type: str
) -> tuple[bool, uuid.UUID | None]:
    """(given, id) of a to-one relationship in the body."""
    relationships = document.data.relationships or {}
    if name not in relationships:
        return False, None
    data = relationships[name].data
    if data is not None and data.type != resource_type:
        raise ApiError(
            409, f"expected type {resource_type!r}", pointer=f"/data/relationships/{name}/data/type"
        )
    return True, data.id if data else None


def timestamp(value: datetime) -> str:
    """RFC 3339 in UTC with a Z."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def resource(
    resource_type: str,
    row: Mapping[Any, Any],
    attributes: Iterable[str],
    relationships: Mapping[str, tuple[str, Any]] | None = None,
) -> dict[str, Any]:
    """A resource object from a row, with timestamps rendered in UTC."""
    values: dict[str, Any] = {}
    for name in attributes:
        value = row[name]
        values[name] = timestamp(value) if isinstance(value, datetime) else value
    document: dict[str, Any] = {
        "type": resource_type,
        "id": str(row["id"]),
        "attributes": values,
        "links": {"self": f"/v1/{resource_type}/{row['id']}"},
    }
    if relationships:
        document["relationships"] = {
            name: {"data": {"type": related_type, "id": str(related)} if related else None}
            for name, (related_type, related) in relationships.items()
        }
    return document


def respond(
    document: dict[str, Any], status_code: int = 200, headers: Mapping[str, str] | None = None
) -> JsonApiResponse:
    """The document as the response itself. A handler that returns a dict has
    FastAPI validate and re-encode it against its return type first, which cost
    about a third of a list's throughput (docs/benchmarks.md); the documents
    are built here from database rows, so there is nothing to validate."""
    return JsonApiResponse(document, status_code=status_code, headers=headers)


def single(data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"data": data, "jsonapi": {"version": "1.1"}, **extra}


class Page:
    """Cursor pagination on (created_at, id): stable while rows are inserted."""

    def __init__(self, size: int, after: tuple[datetime, uuid.UUID] | None, descending: bool):
        self.size, self.after, self.descending = size, after, descending

    @classmethod
    def from_request(cls, request: Request, filters: Sequence[str] = ()) -> Page:
        allowed = {"page[size]", "page[after]", "sort", *(f"filter[{name}]" for name in filters)}
        for name in request.query_params:
            if name not in allowed:
                what = "filter" if name.startswith("filter[") else "query parameter"
                raise ApiError(
                    400,
                    f"unknown {what} {name!r}; allowed: {', '.join(sorted(allowed))}",
                    parameter=name,
                )
        return cls(
            _page_size(request.query_params.get("page[size]")),
            decode_cursor(request.query_params.get("page[after]")),
            _descending(request.query_params.get("sort")),
        )

    def links(self, request: Request, rows: Sequence[Mapping[Any, Any]]) -> dict[str, str | None]:
        self_link = str(request.url.path) + (f"?{request.url.query}" if request.url.query else "")
        if len(rows) < self.size:
            return {"self": self_link, "next": None}
        last = rows[-1]
        query = {k: v for k, v in request.query_params.items() if k != "page[after]"}
        query["page[after]"] = encode_cursor(last["created_at"], last["id"])
        return {"self": self_link, "next": f"{request.url.path}?{urlencode(query)}"}


def listing(
    request: Request, page: Page, rows: Sequence[Mapping[Any, Any]], data: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "data": data,
        "links": page.links(request, rows),
        "meta": {"page": {"size": page.size}},
        "jsonapi": {"version": "1.1"},
    }


def _page_size(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE_SIZE
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise ApiError(
            400,
            f"page[size] must be a whole number from 1 to {MAX_PAGE_SIZE}",
            parameter="page[size]",
        )
    return int(raw)


def _descending(raw: str | None) -> bool:
    if raw in (None, "created_at"):
        return False
    if raw == "-created_at":
        return True
    raise ApiError(400, "sort must be created_at or -created_at", parameter="sort")


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.astimezone(UTC).isoformat(), str(row_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(raw: str | None) -> tuple[datetime, uuid.UUID] | None:
    if raw is None:
        return None
    try:
        padded = raw + "=" * (-len(raw) % 4)
        created_at, row_id = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        moment = datetime.fromisoformat(created_at)
        if moment.tzinfo is None:
            raise ValueError("naive time")
        return moment, uuid.UUID(row_id)
    except (ValueError, TypeError, binascii.Error, UnicodeError, json.JSONDecodeError):
        raise ApiError(
            400, "page[after] is not a cursor this API issued", parameter="page[after]"
        ) from None
