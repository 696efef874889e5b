"""`GET /v1/usage`: what the account's SDKs reported using, per UTC day,
metric and subject (the flag, config or logger it names), from
`POST /api/v1/metrics/bulk` (service/usage/)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import Query, Request
from pydantic import Field

from service.api.dependencies import Database, Viewer
from service.api.errors import JsonApiResponse
from service.api.jsonapi import DecimalDigits, respond
from service.api.limits import NO_NUL
from service.api.routers import V1_PATH, dialect_router
from service.api.schemas import Described, JsonApiVersion, PageLinks, PageMeta
from service.usage import counts

router = dialect_router(V1_PATH, "/usage", tags=["usage"])
TYPE = "usage"
MAX_PAGE_SIZE = 1000


class UsageView(Described):
    day: date
    metric: str = Field(description="The SDK's metric name, e.g. flags.evaluations")
    subject: str = Field(description="The flag, config or logger counted; (other) past the bound")
    total: int


class UsageResource(Described):
    type: Literal["usage"]
    id: str = Field(description="day/metric/subject")
    attributes: UsageView


class UsageList(Described):
    data: list[UsageResource]
    links: PageLinks
    meta: PageMeta
    jsonapi: JsonApiVersion


def usage_resource(row: Any) -> dict[str, Any]:
    day = row["day"].isoformat()
    return {
        "type": TYPE,
        "id": f"{day}/{row['metric']}/{row['subject']}",
        "attributes": {
            "day": day,
            "metric": row["metric"],
            "subject": row["subject"],
            "total": row["total"],
        },
    }


@router.get(
    "",
    response_class=JsonApiResponse,
    response_model=UsageList,
    summary="Usage reported by the account's SDKs, per day (newest first), metric and subject",
)
async def list_usage(
    request: Request,
    caller: Viewer,
    connection: Database,
    since: Annotated[date | None, Query(alias="filter[since]")] = None,
    metric: Annotated[
        str | None, Query(alias="filter[metric]", max_length=128, pattern=NO_NUL)
    ] = None,
    subject: Annotated[
        str | None, Query(alias="filter[subject]", max_length=128, pattern=NO_NUL)
    ] = None,
    page_number: Annotated[
        int, Field(ge=1, le=1_000_000), DecimalDigits, Query(alias="page[number]")
    ] = 1,
    page_size: Annotated[
        int, Field(ge=1, le=MAX_PAGE_SIZE), DecimalDigits, Query(alias="page[size]")
    ] = 100,
) -> JsonApiResponse:
    found = await counts.daily(
        connection,
        caller.account_id,
        since,
        metric,
        subject,
        page_size,
        (page_number - 1) * page_size,
    )
    self_link = str(request.url.path) + (f"?{request.url.query}" if request.url.query else "")
    next_link = None
    if len(found) == page_size:
        query = {**request.query_params, "page[number]": str(page_number + 1)}
        next_link = f"{request.url.path}?{urlencode(query)}"
    return respond(
        {
            "data": [usage_resource(row) for row in found],
            "links": {"self": self_link, "next": next_link},
            "meta": {"page": {"size": page_size}},
            "jsonapi": {"version": "1.1"},
        }
    )
