"""`POST /api/v1/metrics/bulk`: the telemetry every SDK client sends (on by
default: flag evaluations, config resolutions, ...), accepted and summed per
account and day (service/usage/); read back with `GET /v1/usage`."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictFloat, StrictInt, StringConstraints

from service.api.dependencies import Database, Viewer
from service.api.errors import JsonApiResponse
from service.api.jsonapi import JsonApiBody, JsonNumber, Strict, respond
from service.api.limits import NO_NUL
from service.api.routers import SDK_PATH, dialect_router
from service.api.sdk.schemas import MetricsAccepted
from service.usage import counts

router = dialect_router(SDK_PATH, tags=["metrics (smplkit SDK)"])
MetricName = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=NO_NUL)]
DimensionName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=NO_NUL)]
DimensionValue = Annotated[str, StringConstraints(max_length=128, pattern=NO_NUL)]
Short = Annotated[str, StringConstraints(max_length=64, pattern=NO_NUL)]


class MetricAttributes(Strict):
    name: MetricName
    value: (
        Annotated[StrictInt, Field(ge=0, le=10**12)]
        | Annotated[StrictFloat, Field(ge=0, le=1e12, allow_inf_nan=False)]
    )
    unit: Short | None = None
    period_seconds: Annotated[int, Field(ge=0, le=86_400), JsonNumber] | None = None
    dimensions: dict[DimensionName, DimensionValue] = Field(
        default_factory=dict,
        max_length=16,
        json_schema_extra={"propertyNames": {"pattern": NO_NUL, "minLength": 1, "maxLength": 64}},
    )
    recorded_at: Short | None = None


class Metric(Strict):
    type: Annotated[str, StringConstraints(pattern="^metric$")]
    attributes: MetricAttributes


class MetricsReport(Strict):
    data: Annotated[list[Metric], Field(max_length=counts.MAX_REPORTED)]


@router.post(
    "/metrics/bulk",
    status_code=202,
    response_class=JsonApiResponse,
    response_model=MetricsAccepted,
    summary="Count the metrics an SDK reports (VIEWER: every SDK key reports)",
)
async def report_metrics(
    body: Annotated[MetricsReport, JsonApiBody], caller: Viewer, connection: Database
) -> JsonApiResponse:
    reported = [
        counts.Reported(
            metric.attributes.name, round(metric.attributes.value), metric.attributes.dimensions
        )
        for metric in body.data
    ]
    accepted = await counts.record(connection, caller.account_id, reported)
    return respond({"accepted": accepted}, 202)
