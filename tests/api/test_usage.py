"""SDK telemetry: `POST /api/v1/metrics/bulk` as the SDK sends it
(`smplkit/_metrics.py`) is accepted, summed per account, day, metric and
subject, bounded, read back through `GET /v1/usage`, and logged below
warning level."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest

from service.usage import counts
from tests.support.api import Tenant, new_tenant


@pytest.fixture
async def tenant(module_client: httpx.AsyncClient) -> Tenant:
    return await new_tenant(module_client)


def metric(name: str, value: Any, **dimensions: str) -> dict[str, Any]:
    """One entry as `_MetricsReporter._entry` builds it."""
    return {
        "type": "metric",
        "attributes": {
            "name": name,
            "value": value,
            "unit": "evaluations",
            "period_seconds": 60,
            "dimensions": {"environment": "production", "service": "web", **dimensions},
            "recorded_at": "2026-12-06T14:00:00+00:00",
        },
    }


async def report(tenant: Tenant, *entries: dict[str, Any]) -> httpx.Response:
    # The SDK posts with httpx's client directly: content, the JSON:API media type.
    return await tenant.client.post(
        "/api/v1/metrics/bulk", headers=tenant.headers(), content=json.dumps({"data": entries})
    )


async def usage(tenant: Tenant, query: str = "") -> list[dict[str, Any]]:
    answer = await tenant.call("GET", f"/v1/usage{query}")
    assert answer.status_code == 200, answer.text
    return [item["attributes"] for item in answer.json()["data"]]


async def test_reports_are_summed_per_day_metric_and_subject(
    tenant: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        first = await report(
            tenant,
            metric("flags.evaluations", 3, flag="dark-mode"),
            metric("flags.evaluations", 2, flag="checkout"),
            metric("config.resolutions", 1, config="db"),
            metric("flags.cache_hits", 4),
        )
        second = await report(tenant, metric("flags.evaluations", 5, flag="dark-mode"))
    assert (first.status_code, first.json()) == (202, {"accepted": 4})
    assert second.status_code == 202
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
    rows = {(row["metric"], row["subject"]): row["total"] for row in await usage(tenant)}
    assert rows == {
        ("flags.evaluations", "dark-mode"): 8,
        ("flags.evaluations", "checkout"): 2,
        ("config.resolutions", "db"): 1,
        ("flags.cache_hits", ""): 4,
    }
    only = await usage(tenant, "?filter%5Bsubject%5D=dark-mode")
    assert [(row["metric"], row["total"]) for row in only] == [("flags.evaluations", 8)]
    other = await new_tenant(tenant.client)
    assert await usage(other) == []


async def test_subjects_past_the_days_bound_are_summed_as_other(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(counts, "MAX_ROWS_PER_DAY", 3)
    entries = [metric("flags.evaluations", 1, flag=f"flag-{n}") for n in range(6)]
    assert (await report(tenant, *entries)).status_code == 202
    assert (await report(tenant, metric("flags.evaluations", 1, flag="flag-9"))).status_code == 202
    rows = {row["subject"]: row["total"] for row in await usage(tenant)}
    assert rows == {"flag-0": 1, "flag-1": 1, counts.OTHER: 5}


@pytest.mark.parametrize(
    "body",
    [
        '{"data": [' + json.dumps(metric("m", 1))[:-1] + ', "extra": 1}]}',
        json.dumps({"data": [metric("m", -1)]}),
        json.dumps({"data": [metric("m", 10**13)]}),
        '{"data": [' + json.dumps(metric("m", 1)).replace("1, ", "NaN, ", 1) + "]}",
        json.dumps({"data": [metric("a\u0000b", 1)]}),
        json.dumps({"data": [metric("m", 1, flag="\ud800")]}),
        json.dumps({"data": [metric("m", 1, flag="x" * 129)]}),
        json.dumps({"data": [metric("m" * 129, 1)]}),
        json.dumps({"data": [metric("m", True)]}),
        json.dumps({"data": [{**metric("m", 1), "type": "config"}]}),
        json.dumps({"data": [metric("m", 1)] * (counts.MAX_REPORTED + 1)}),
        json.dumps({"data": [metric("m", 1, **{f"d{n}": "v" for n in range(20)})]}),
        '{"data": {}}',
    ],
)
async def test_bad_reports_are_refused_and_count_nothing(tenant: Tenant, body: str) -> None:
    answer = await tenant.client.post(
        "/api/v1/metrics/bulk", headers=tenant.headers(), content=body
    )
    assert answer.status_code in (400, 422), answer.text
    assert await usage(tenant) == []


async def test_usage_needs_a_key(tenant: Tenant) -> None:
    answer = await tenant.client.post(
        "/api/v1/metrics/bulk", json={"data": [metric("m", 1)]}, headers={}
    )
    assert answer.status_code == 401
