"""Answers are encoded by orjson where it can and by the standard library
where it cannot (service/api/encoding.py): either way the client reads the
document it would have read before, big integers and all."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.api.encoding import encode
from service.api.jsonapi import timestamp
from tests.support.api import Tenant, new_tenant

BEYOND_64_BITS = 2**70 + 1


def standard(document: Any) -> bytes:
    """What Starlette's JSONResponse rendered before."""
    return json.dumps(
        document, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


@pytest.mark.parametrize(
    "document",
    [
        {"data": {"id": "x", "attributes": {"name": "Zürich ✓ 日本", "n": None, "on": True}}},
        {"text": 'line\nbreak\ttab \u2028 \\ " / \x00 \x1f'},
        {"numbers": [0, -1, 2**63 - 1, -(2**63), 0.1, 1.5, -2.25]},
        {"big": BEYOND_64_BITS, "nested": [{"bigger": -(2**80)}]},
        {1: "a key that is not a string"},
        [],
    ],
    ids=["unicode", "control characters", "numbers", "beyond 64 bits", "int key", "empty"],
)
def test_the_encoding_reads_back_as_the_standard_one(document: Any) -> None:
    assert json.loads(encode(document)) == json.loads(standard(document))


def test_a_lone_surrogate_is_refused_as_before() -> None:
    with pytest.raises(UnicodeEncodeError):
        standard({"s": "\ud800"})
    with pytest.raises(UnicodeEncodeError):
        encode({"s": "\ud800"})


@pytest.fixture
async def tenant(module_client: httpx.AsyncClient) -> Tenant:
    return await new_tenant(module_client)


async def test_a_config_holding_an_integer_beyond_64_bits_reads_back_whole(
    tenant: Tenant,
) -> None:
    items = {"big": BEYOND_64_BITS, "list": [-(2**80), 1]}
    created = await tenant.create("configs", {"key": "wide", "name": "Wide", "items": items})
    assert created["attributes"]["items"] == items
    got = await tenant.call("GET", f"/v1/configs/{created['id']}")
    assert got.status_code == 200, got.text
    assert got.json()["data"]["attributes"]["items"] == items
    page = await tenant.call("GET", "/v1/configs")
    assert page.status_code == 200, page.text
    assert [config["attributes"]["items"] for config in page.json()["data"]] == [items]


@given(
    st.datetimes(
        min_value=datetime(2, 1, 1),
        max_value=datetime(9998, 12, 31),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=14)), timezone(-timedelta(hours=12, minutes=45))]
        ),
    )
)
def test_a_timestamp_is_rendered_as_isoformat_renders_it_in_utc(value: datetime) -> None:
    assert timestamp(value) == value.astimezone(UTC).isoformat().replace("+00:00", "Z")
