"""Pages and keys as the smplkit SDK speaks them: pages numbered from 1 with
`meta.pagination`, a resource named by its key (the body's id on a create, the
URL's on a replace). Shared by the SDK dialect's routers, none of which
imports another."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import Query
from pydantic import Field
from sqlalchemy import RowMapping, Select, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from service.api.errors import Conflict
from service.api.jsonapi import DecimalDigits

MAX_PAGE_SIZE = 1000
# Beyond this a page number is no list a client pages through.
MAX_PAGE_NUMBER = 1_000_000
# The SDK dialect's page parameters (its default page size: MAX_PAGE_SIZE).
PageNumber = Annotated[
    int, Field(ge=1, le=MAX_PAGE_NUMBER), DecimalDigits, Query(alias="page[number]")
]
PageSize = Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE), DecimalDigits, Query(alias="page[size]")]


async def page_of(
    connection: AsyncConnection, ordered: Select[Any], number: int, size: int
) -> Sequence[RowMapping]:
    """Page `number` (from 1) of `size` rows of a query in a total order."""
    page = ordered.limit(size).offset((number - 1) * size)
    found: Sequence[RowMapping] = (await connection.execute(page)).mappings().all()
    return found


async def pagination(
    connection: AsyncConnection, query: Select[Any], number: int, size: int, total: bool
) -> dict[str, int]:
    """`meta.pagination` as the SDK parses it; the totals only when asked (a count)."""
    count = None
    if total:
        count = await connection.scalar(select(func.count()).select_from(query.subquery())) or 0
    return numbered(number, size, count)


def numbered(number: int, size: int, total: int | None) -> dict[str, int]:
    """`meta.pagination` of page `number` of `size`, with the totals when known."""
    described = {"page": number, "size": size}
    if total is not None:
        described["total"] = total
        described["total_pages"] = -(-total // size)
    return described


def key_of(expected_type: str, sent_type: str, sent_id: str | None, url_key: str | None) -> str:
    """A resource's key in the SDK's dialect: the body's id on a create, the
    URL's on a replace (where the body's id, when sent, must be the same)."""
    if sent_type != expected_type:
        raise Conflict(f"expected type {expected_type!r}", pointer="/data/type")
    if url_key is not None and sent_id is not None and sent_id != url_key:
        raise Conflict("the id in the body differs from the key in the URL", pointer="/data/id")
    return url_key or str(sent_id)
