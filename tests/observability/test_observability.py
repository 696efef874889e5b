"""Metrics at /metrics, structured logs with request ids and revisions."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from pathlib import Path

import httpx
import pytest
from alembic_lockstep import lock
from sqlalchemy.engine import URL

from service.api import account_shares
from tests.support.api import JSONAPI, api_client, new_tenant
from tests.support.configs import settings_for
from tests.support.postgres import connect, service_url, take_tree_lock
from tests.support.processes import OPERATOR, ServiceProcess, service_environment
from tests.support.readiness import LOCK_NAME, running_app, wait_for_phase
from tests.support.revisions import REVISIONS


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus exposition."""
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = rf"^{re.escape(name)}{re.escape('{' + wanted + '}') if labels else ''} (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else None


async def test_migration_metrics_follow_the_bootstrap(empty_database: URL) -> None:
    holder = await connect(empty_database)
    key = lock.lock_key(LOCK_NAME)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", key)
        started = time.monotonic()
        async with running_app(settings_for(empty_database)) as client:
            await wait_for_phase(client, "waiting_for_lock")
            waiting = (await client.get("/metrics", headers=OPERATOR)).text
            assert metric(waiting, "migration_phase", phase="waiting_for_lock") == 1
            assert metric(waiting, "migration_phase", phase="ready") == 0
            seen_waiting = time.monotonic()
            await holder.execute("SELECT pg_advisory_unlock($1)", key)
            released = time.monotonic()
            await wait_for_phase(client, "ready")
            response = await client.get("/metrics", headers=OPERATOR)
            lifetime = time.monotonic() - started
    finally:
        await holder.close()
    assert response.headers["content-type"].startswith("text/plain")
    ready = response.text
    assert metric(ready, "migration_phase", phase="ready") == 1
    assert metric(ready, "migration_phase", phase="waiting_for_lock") == 0
    durations = [
        metric(ready, "migration_revision_duration_seconds", revision=revision)
        for revision in REVISIONS
    ]
    assert all(seconds is not None and seconds > 0 for seconds in durations), durations
    # Measured inside the app's life, so within it (not since the process began, nor in ms).
    assert sum(durations) < lifetime  # type: ignore[arg-type]
    lock_wait = metric(ready, "migration_lock_wait_seconds")
    assert lock_wait is not None
    # The bootstrap was waiting before the test saw it wait, and until after the release.
    assert released - seen_waiting <= lock_wait < lifetime


async def test_request_metrics_count_by_route_and_status(migrated_database: URL) -> None:
    async with api_client(migrated_database) as client:
        tenant = await new_tenant(client)
        before = (
            metric(
                (await client.get("/metrics", headers=OPERATOR)).text,
                "http_requests_total",
                method="GET",
                route="/v1/users/{user_id}",
                status="404",
            )
            or 0
        )
        for _ in range(3):
            await tenant.call("GET", f"/v1/users/{uuid.uuid4()}")
        await tenant.call("GET", f"/v1/users/{tenant.owner_id}")
        text = (await client.get("/metrics", headers=OPERATOR)).text
        assert (
            metric(
                text, "http_requests_total", method="GET", route="/v1/users/{user_id}", status="404"
            )
            == before + 3
        )
        assert (
            metric(
                text, "http_requests_total", method="GET", route="/v1/users/{user_id}", status="200"
            )
            == 1
        )
        count = metric(
            text, "http_request_duration_seconds_count", method="GET", route="/v1/users/{user_id}"
        )
        assert count == before + 4


async def test_a_key_pasted_into_a_path_is_masked_in_the_request_log(
    migrated_database: URL, caplog: pytest.LogCaptureFixture
) -> None:
    async with api_client(migrated_database) as client:
        tenant = await new_tenant(client)
        requests = logging.getLogger("service.requests")
        # The service's loggers do not propagate (service/observability/logs.py).
        requests.addHandler(caplog.handler)
        try:
            answered = await tenant.call("GET", f"/v1/users/{tenant.owner_key}")
        finally:
            requests.removeHandler(caplog.handler)
    assert answered.status_code == 422  # not a user id
    records = [record for record in caplog.records if record.name == "service.requests"]
    logged = [record.getMessage() for record in records]
    assert any("/v1/users/psk_(masked)" in line for line in logged), logged
    assert not any(tenant.owner_key in line for line in logged)
    assert all(tenant.owner_key not in str(record.__dict__) for record in records)


@pytest.mark.processes
def test_json_logs_carry_request_ids_and_revisions(empty_database: URL, tmp_path: Path) -> None:
    process = ServiceProcess.uvicorn(
        service_environment(DATABASE_URL=service_url(empty_database), LOG_FORMAT="json"),
        tmp_path / "json.log",
    )
    try:
        process.wait_for_phase("ready")
        given = httpx.get(
            f"http://127.0.0.1:{process.port}/v1/users", headers={"X-Request-ID": "trace-abc.123"}
        )
        assert given.headers["x-request-id"] == "trace-abc.123"
        made = httpx.get(
            f"http://127.0.0.1:{process.port}/v1/configs",
            headers={"X-Request-ID": "bad id with spaces"},
        )
        assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    finally:
        process.stop()
    events = process.events()
    revisions = [
        event["revision"] for event in events if event["message"].startswith("applied revision")
    ]
    assert revisions == REVISIONS
    requests = {
        event["request_id"]: event for event in events if event["logger"] == "service.requests"
    }
    assert requests["trace-abc.123"]["status"] == 401
    assert requests["trace-abc.123"]["route"] == "/v1/users"
    assert requests[made.headers["x-request-id"]]["path"] == "/v1/configs"
    # After the app took over logging, every line is one JSON event.
    lines = process.logs().splitlines()
    first = next(index for index, line in enumerate(lines) if line.startswith("{"))
    assert all(line.startswith("{") for line in lines[first:]), lines[first:]


@pytest.mark.processes
def test_text_logs_for_people(empty_database: URL, tmp_path: Path) -> None:
    process = ServiceProcess.uvicorn(
        service_environment(DATABASE_URL=service_url(empty_database), LOG_FORMAT="text"),
        tmp_path / "text.log",
    )
    try:
        process.wait_for_phase("ready")
        answer = httpx.get(
            f"http://127.0.0.1:{process.port}/v1/account",
            headers={"X-Request-ID": "text-log-1"},
            timeout=30,
        )
    finally:
        process.stop()
    assert answer.status_code == 401
    assert re.search(
        r"INFO alembic_lockstep\.bootstrap \[pid \d+\] applied revision", process.logs()
    )
    # A request's line ends with its id, as a JSON event carries it.
    assert re.search(
        r"INFO service\.requests \[pid \d+\] GET /v1/account 401 [0-9.]+ms request_id=text-log-1$",
        process.logs(),
        re.MULTILINE,
    ), process.logs()[-2000:]
    assert not any(line.startswith("{") for line in process.logs().splitlines())


async def test_requests_refused_before_routing_count_under_their_route(
    migrated_database: URL,
) -> None:
    """406, 413 and 415 are answered before the router runs: still counted
    under the route the request was for, not as "unmatched"."""
    async with api_client(migrated_database) as client:
        tenant = await new_tenant(client)
        refused = [
            ("POST", "/v1/configs", {"Content-Type": "text/plain"}, b"{}", "415"),
            ("POST", "/v1/configs", {"Content-Type": JSONAPI}, b" " * (2 * 1024 * 1024), "413"),
            ("GET", "/v1/users", {"Accept": f'{JSONAPI}; ext="x"'}, b"", "406"),
        ]
        for method, path, headers, body, status in refused:
            answer = await client.request(
                method, path, headers={**tenant.headers(), **headers}, content=body
            )
            assert answer.status_code == int(status), answer.text
        text = (await client.get("/metrics", headers=OPERATOR)).text
    for method, path, _, _, status in refused:
        assert metric(text, "http_requests_total", method=method, route=path, status=status) == 1
    assert 'route="unmatched"' not in text


async def test_a_request_refused_its_accounts_share_counts_under_its_route(
    migrated_database: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request that waited too long for its account's share (503, before
    routing) is counted and logged under the route it was for: "unmatched"
    said nothing of where an overloaded account was sending its requests."""
    monkeypatch.setattr(account_shares, "WAIT_SECONDS", 0.5)
    async with api_client(
        migrated_database, database_pool_size=1, database_max_overflow=0, account_pool_share=1.0
    ) as client:
        tenant = await new_tenant(client)
        # Its key known to the worker, its requests wait in its own share (one slot).
        assert (await tenant.call("GET", "/v1/configs")).status_code == 200
        lock = await connect(migrated_database)
        try:
            async with lock.transaction():
                # The SDK's create of a config waits for it, in the account's slot.
                await take_tree_lock(lock, tenant.account_id)
                body = {"data": {"type": "config", "id": "held", "attributes": {"name": "H"}}}
                held = asyncio.create_task(tenant.call("POST", "/api/v1/configs", body=body))
                await asyncio.sleep(0.2)
                refused = await tenant.call("GET", "/v1/environments")
        finally:
            await lock.close()
        assert (await held).status_code == 201
        text = (await client.get("/metrics", headers=OPERATOR)).text
    assert refused.status_code == 503, refused.text
    assert "ACCOUNT_POOL_SHARE" in refused.json()["errors"][0]["detail"]
    labels = {"method": "GET", "route": "/v1/environments", "status": "503"}
    assert metric(text, "http_requests_total", **labels) == 1
    assert 'route="unmatched"' not in text
