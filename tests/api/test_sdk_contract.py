"""The official smplkit SDK (the pinned release) against a real server with
two workers: the SDK is a REST client nobody here wrote, so it is the test of
the /api/v1 dialect. Its process runs in a network namespace with only a
loopback interface (tests/support/sdk_namespace.py), and each test checks
that it looked up only the SDK's names of the server and connected to
loopback only."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import URL

from tests.support.api import JSONAPI, create_account_over_http, document
from tests.support.processes import ServiceProcess
from tests.support.sdk_namespace import DOMAIN, run_sdk
from tests.support.servers import ready_server

# Every test here starts a real process or server.
pytestmark = pytest.mark.processes

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


def test_on_change_fires_for_a_v1_write_made_by_another_replica(
    server: ServiceProcess, api_key: str, module_database: URL
) -> None:
    """The stream is on the first server; the write goes through /v1 to a
    second server (another process, as another replica or worker is) on the
    same database, and reaches the SDK through LISTEN/NOTIFY."""
    assert server.port is not None
    with ready_server(module_database, workers=1) as replica:
        assert replica.port is not None
        replica_port = replica.port

        def write_elsewhere() -> None:
            base = f"http://127.0.0.1:{replica_port}/v1/configs"
            headers = {"Authorization": f"Bearer {api_key}", "Content-Type": JSONAPI}
            found = httpx.get(base, params={"filter[key]": "live"}, headers=headers, timeout=10)
            config_id = found.json()["data"][0]["id"]
            body = document("configs", {"items": {"timeout": 5}}, config_id)
            patched = httpx.patch(f"{base}/{config_id}", json=body, headers=headers, timeout=10)
            assert patched.status_code == 200, patched.text

        report = run_sdk("live", server.port, api_key, when_ready=write_elsewhere)
    assert (report["old"], report["new"], report["source"]) == (3, 5, "push")
    assert report["value"] == 5
    assert_stayed_on_loopback(report)


def test_environments_and_account_settings_through_the_sdk(
    server: ServiceProcess, api_key: str
) -> None:
    assert server.port is not None
    report = run_sdk("platform", server.port, api_key)
    assert report["color"] == "#11223344"
    assert report["listed"] == ["development", "production", "qa", "staging"]
    assert report["order"] == ["production", "staging", "development"]
    assert_stayed_on_loopback(report)


def test_the_flags_quick_start_and_management_through_the_sdk(
    server: ServiceProcess, api_key: str
) -> None:
    assert server.port is not None
    report = run_sdk("flags", server.port, api_key)
    assert report["pro"] == [True, "dark"]
    assert report["free"] == [False, "light"]
    assert report["listed"] == ["checkout-v2", "discovered-limit", "theme"]
    assert report["discovered"] == ["NUMERIC", 10]
    assert_stayed_on_loopback(report)
    # The SDK's telemetry (on, as it ships) was flushed at close and counted.
    usage = httpx.get(
        f"http://127.0.0.1:{server.port}/v1/usage",
        params={"filter[metric]": "flags.evaluations"},
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=10,
    )
    counted = {
        row["attributes"]["subject"]: row["attributes"]["total"] for row in usage.json()["data"]
    }
    assert counted == {"checkout-v2": 2, "theme": 2}


def test_the_async_client_evaluates_flags(server: ServiceProcess, api_key: str) -> None:
    assert server.port is not None
    report = run_sdk("flags_async", server.port, api_key)
    assert (report["staff"], report["guest"]) == (True, False)
    assert report["listed"] == ["async-flag"]
    assert_stayed_on_loopback(report)


def test_a_flag_written_through_v1_on_another_replica_reaches_on_change(
    server: ServiceProcess, api_key: str, module_database: URL
) -> None:
    assert server.port is not None
    with ready_server(module_database, workers=1) as replica:
        assert replica.port is not None
        replica_port = replica.port

        def write_elsewhere() -> None:
            base = f"http://127.0.0.1:{replica_port}/v1/flags"
            headers = {"Authorization": f"Bearer {api_key}", "Content-Type": JSONAPI}
            found = httpx.get(base, headers=headers, timeout=10).json()["data"]
            flag_id = next(flag["id"] for flag in found if flag["attributes"]["key"] == "live-flag")
            rule = {"logic": {"==": [{"var": "user.plan"}, "pro"]}, "value": True}
            environments = {"production": {"enabled": True, "rules": [rule]}}
            body = document("flags", {"environments": environments}, flag_id)
            patched = httpx.patch(f"{base}/{flag_id}", json=body, headers=headers, timeout=10)
            assert patched.status_code == 200, patched.text

        report = run_sdk("flags_live", server.port, api_key, when_ready=write_elsewhere)
    assert (report["before"], report["after"]) == (False, True)
    assert report["source"] == "push"
    assert_stayed_on_loopback(report)
