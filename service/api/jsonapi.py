"""JSON:API 1.1 documents: request bodies, resource objects, lists with cursors."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar
from urllib.parse import urlencode

import orjson
from fastapi import Body, Depends, Query, Request, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from service.api.encoding import encode as encode
from service.api.errors import (
    JSONAPI_MEDIA_TYPE,
    BadRequest,
    Conflict,
    Forbidden,
    JsonApiResponse,
    UnprocessableContent,
    defer_problem,
)
from service.api.limits import MAX_PAGE_BYTES, MAX_POSITION, NO_NUL, Text

A = TypeVar("A", bound=BaseModel)

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
# A cursor this API issues is about 100 characters; anything much longer is not one.
MAX_CURSOR_LENGTH = 256


def _true_or_false(value: object) -> object:
    if isinstance(value, str) and value not in ("true", "false"):
        raise ValueError("must be true or false")
    return value


# A boolean query parameter: `true` or `false`, nothing else (pydantic would
# also take yes, on, 1, t, y and their opposites, guessing what was meant).
QueryBool = Annotated[bool, BeforeValidator(_true_or_false)]


def _decimal_digits(value: object) -> object:
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("must be a whole number written with the digits 0-9 alone")
    return value


# A whole-number query parameter's check: digits only (pydantic would also take
# 1.0, +5, " 5" and 5_0, which it reads as 50). Its bounds go before it, in a
# Field (`Annotated[int, Field(ge=1, le=100), DecimalDigits, Query(...)]`):
# bounds given after it, in Query, would leave /openapi.json without their
# minimum and maximum.
DecimalDigits = BeforeValidator(_decimal_digits)


def _a_json_number(value: object) -> object:
    if isinstance(value, bool | str):
        raise ValueError("must be a JSON number, not a string or a boolean")
    return value


# A whole number in a body: a JSON number (15, or 15.0 as JSON Schema's integer
# allows), never true or "3", which pydantic would take as 1 and 3. After its
# bounds, as DecimalDigits.
JsonNumber = BeforeValidator(_a_json_number)


class Strict(BaseModel):
    """Refuses unknown members: a typo must not be silently ignored."""

    model_config = ConfigDict(extra="forbid")


class Identifier(Strict):
    type: Text
    id: uuid.UUID


class ToOne(Strict):
    data: Identifier | None


class ResourceInput(Strict, Generic[A]):
    type: Text
    id: Text | None = None
    attributes: A
    relationships: dict[str, ToOne] | None = Field(
        default=None, json_schema_extra={"propertyNames": {"pattern": NO_NUL}}
    )


class Document(Strict, Generic[A]):
    """A request body: `{"data": {"type", "attributes", "relationships"?}}`."""

    data: ResourceInput[A]


# A route's body is `Annotated[Document[...], JsonApiBody]`: its OpenAPI
# document names the JSON:API media type (the request's media type itself is
# checked by service/api/negotiation.py).
JsonApiBody = Body(media_type=JSONAPI_MEDIA_TYPE)


def expect_type(
    document: Document[Any], resource_type: str, resource_id: uuid.UUID | None = None
) -> None:
    """JSON:API answers 409 when the body's type (or id) is not the endpoint's,
    and 403 for an id in a body that creates: ids are made by the database."""
    if document.data.type != resource_type:
        raise Conflict(f"expected type {resource_type!r}", pointer="/data/type")
    given = document.data.id
    if resource_id is None and given is not None:
        raise Forbidden("client-generated ids are not supported", pointer="/data/id")
    if resource_id is not None and given is not None and not _same_id(given, resource_id):
        raise Conflict("the id in the body differs from the id in the URL", pointer="/data/id")


def _same_id(given: str, resource_id: uuid.UUID) -> bool:
    """The body's id names the URL's resource, in any spelling the URL takes."""
    try:
        return uuid.UUID(given) == resource_id
    except ValueError:
        return False


def changed_attributes(document: Document[Any], not_null: Iterable[str]) -> dict[str, Any]:
    """The attributes a PATCH sets; null is refused for those that cannot be null."""
    values: dict[str, Any] = document.data.attributes.model_dump(exclude_unset=True)
    for name in not_null:
        if name in values and values[name] is None:
            raise UnprocessableContent(f"{name} cannot be null", pointer=f"/data/attributes/{name}")
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
        raise Conflict(
            f"expected type {resource_type!r}", pointer=f"/data/relationships/{name}/data/type"
        )
    return True, data.id if data else None


def timestamp(value: datetime) -> str:
    """RFC 3339 in UTC with a Z: what `isoformat()` writes (microseconds only
    when there are some), rendered by orjson in a third of its time (two a
    resource: a page of 50 spent 4% of its CPU here)."""
    return orjson.dumps(value.astimezone(UTC), option=orjson.OPT_UTC_Z)[1:-1].decode()


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
    """Cursor pagination on (created_at, id): stable while rows are inserted.
    Ordered by `position` (environments), the keyset is (position, created_at, id)."""

    def __init__(
        self,
        size: int,
        after: tuple[Any, ...] | None,
        descending: bool,
        by_position: bool = False,
        positioned: bool = False,
    ):
        self.size, self.after, self.descending = size, after, descending
        # The order (by position or by creation), and whether the list's rows
        # carry a position: its cursors then always name the row's position,
        # creation and id, so a cursor serves either order.
        self.by_position = by_position
        self.positioned = positioned or by_position

    @property
    def keyset(self) -> tuple[Any, ...] | None:
        """What the order compares of the cursor's row."""
        if self.after is None or self.by_position or not self.positioned:
            return self.after
        return self.after[1:]

    def links(
        self, request: Request, rows: Sequence[Mapping[Any, Any]], more: bool
    ) -> dict[str, str | None]:
        self_link = str(request.url.path) + (f"?{request.url.query}" if request.url.query else "")
        if not more or not rows:
            return {"self": self_link, "next": None}
        last = rows[-1]
        query = {k: v for k, v in request.query_params.items() if k != "page[after]"}
        position = last["position"] if self.positioned else None
        query["page[after]"] = encode_cursor(last["created_at"], last["id"], position)
        return {"self": self_link, "next": f"{request.url.path}?{urlencode(query)}"}


async def page_parameters(
    request: Request,
    size: Annotated[
        int, Field(ge=1, le=MAX_PAGE_SIZE), DecimalDigits, Query(alias="page[size]")
    ] = DEFAULT_PAGE_SIZE,
    after: Annotated[
        str | None,
        Query(
            alias="page[after]",
            description="Where the page starts: only the cursor in the previous page's "
            "links.next, an opaque value this API issued, is accepted (anything else: 400)",
        ),
    ] = None,
    sort: Annotated[Literal["created_at", "-created_at"], Query()] = "created_at",
) -> Page:
    return Page(size, _cursor(request, after), sort == "-created_at")


PageQuery = Annotated[Page, Depends(page_parameters)]


async def positioned_page_parameters(
    request: Request,
    size: Annotated[
        int, Field(ge=1, le=MAX_PAGE_SIZE), DecimalDigits, Query(alias="page[size]")
    ] = DEFAULT_PAGE_SIZE,
    after: Annotated[
        str | None,
        Query(
            alias="page[after]",
            description="Where the page starts: only the cursor in the previous page's "
            "links.next, an opaque value this API issued, is accepted (anything else: 400)",
        ),
    ] = None,
    sort: Annotated[
        Literal["position", "-position", "created_at", "-created_at"],
        Query(description="`position` by default; ties are broken by creation, then id"),
    ] = "position",
) -> Page:
    by_position = sort.lstrip("-") == "position"
    keyset = _cursor(request, after, by_position=True)
    return Page(size, keyset, sort.startswith("-"), by_position, positioned=True)


# The lists whose resources carry a `position` (environments): in that order.
PositionedPageQuery = Annotated[Page, Depends(positioned_page_parameters)]


def listing(
    request: Request,
    page: Page,
    rows: Sequence[Mapping[Any, Any]],
    to_resource: Callable[[Any], dict[str, Any]],
) -> Response:
    """A page of resources, ended early once it holds MAX_PAGE_BYTES of them
    (never fewer than one): `links.next` then continues after the last shown."""
    parts: list[bytes] = []
    size = 0
    for row in rows:
        part = encode(to_resource(row))
        if parts and size + len(part) > MAX_PAGE_BYTES:
            break
        parts.append(part)
        size += len(part) + 1
    shown = rows[: len(parts)]
    more = len(parts) < len(rows) or len(rows) == page.size
    tail = {
        "links": page.links(request, shown, more),
        "meta": {"page": {"size": page.size}},
        "jsonapi": {"version": "1.1"},
    }
    body = b'{"data":[' + b",".join(parts) + b"]," + encode(tail)[1:]
    return Response(body, media_type=JSONAPI_MEDIA_TYPE)


def encode_cursor(created_at: datetime, row_id: uuid.UUID, position: int | None = None) -> str:
    values: list[Any] = [created_at.astimezone(UTC).isoformat(), str(row_id)]
    if position is not None:
        values.insert(0, position)
    raw = json.dumps(values).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor(request: Request, raw: str | None, by_position: bool = False) -> tuple[Any, ...] | None:
    """A page's cursor; one this API did not issue is refused once the caller
    is known (page parameters are solved before the caller's dependency)."""
    try:
        return decode_cursor(raw, by_position)
    except BadRequest as problem:
        defer_problem(request.scope, problem)
        return None


def decode_cursor(raw: str | None, by_position: bool = False) -> tuple[Any, ...] | None:
    """The keyset a cursor holds: (created_at, id), or (position, created_at, id)
    for a list whose rows carry a position (in either order)."""
    if raw is None:
        return None
    try:
        if len(raw) > MAX_CURSOR_LENGTH:
            raise ValueError("too long")
        padded = raw + "=" * (-len(raw) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        if not isinstance(values, list):
            raise TypeError("a cursor is a list")
        if by_position:
            position, created_at, row_id = values
            # bool is an int in Python; a position is a whole number the column holds.
            if type(position) is not int or not 0 <= position <= MAX_POSITION:
                raise ValueError("not a position")
        else:
            created_at, row_id = values
        if not isinstance(created_at, str) or not isinstance(row_id, str):
            raise TypeError("a cursor holds two strings")
        moment = datetime.fromisoformat(created_at)
        if moment.tzinfo is None:
            raise ValueError("naive time")
        # In UTC, as the database compares it: a time near year 1 or 9999 with an
        # offset does not exist there (OverflowError).
        keyset = (moment.astimezone(UTC), uuid.UUID(row_id))
        return (position, *keyset) if by_position else keyset
    except (
        ValueError,
        TypeError,
        OverflowError,
        RecursionError,
        binascii.Error,
        UnicodeError,
    ):
        raise BadRequest(
            "page[after] is not a cursor this API issued", parameter="page[after]"
        ) from None
