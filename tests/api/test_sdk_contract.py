"""The official smplkit SDK (the pinned release) against a real server with
two workers: the SDK is a REST client nobody here wrote, so it is the test of
the /api/v1 dialect. Its process runs in a network namespace with only a
loopback interface (tests/support/sdk_namespace.py), and each test checks
that it looked up only the SDK's names of the server and connected to
loopback only."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.engine import URL

from tests.support.api import create_account_over_http
from tests.support.processes import ServiceProcess
from tests.support.sdk_namespace import DOMAIN, run_sdk
from tests.support.servers import ready_server

LOOPBACK = {"127.0.0.1", "::1"}


@pytest.fixture(scope="module")
def server(module_database: URL) -> Iterator[ServiceProcess]:
    with ready_server(module_database, workers=2) as process:
        yield process


@pytest.fixture
def api_key(server: ServiceProcess) -> str:
    assert server.port is not None
    return create_account_over_http(server.port, "SDK contract")


def assert_stayed_on_loopback(report: dict[str, Any]) -> None:
    assert report["peers"], "the SDK connected to nothing"
    assert set(report["peers"]) <= LOOPBACK, report["peers"]
    assert all(name.endswith(DOMAIN) for name in report["lookups"]), report["lookups"]


def test_config_crud_and_deep_resolution_through_the_sdk(
    server: ServiceProcess, api_key: str
) -> None:
    assert server.port is not None
    report = run_sdk("crud", server.port, api_key)
    assert report["resolved"]["db"] == {"host": "db.internal", "pool": {"min": 1, "max": 10}}
    assert_stayed_on_loopback(report)


def test_discovery_of_more_than_a_page_and_every_page_listed(
    server: ServiceProcess, api_key: str
) -> None:
    assert server.port is not None
    report = run_sdk("many", server.port, api_key)
    assert report["listed"] == 1_100
    assert_stayed_on_loopback(report)


def test_the_async_client(server: ServiceProcess, api_key: str) -> None:
    assert server.port is not None
    report = run_sdk("crud_async", server.port, api_key)
    assert report["listed"] == ["contract-async"]
    assert_stayed_on_loopback(report)
