"""GET /api/v1/events through real servers: the SSE frames the SDK reads,
writes from either dialect on another process, a revoked key, SIGTERM, the
per-key cap; and NOTIFY's transactional delivery."""

from __future__ import annotations

import asyncio
import json
import queue
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine

from service.configs.events import CHANGED, CHANNEL, announce
from tests.support.api import JSONAPI, create_account_over_http, document
from tests.support.configs import shared_folder
from tests.support.pgbouncer import pgbouncer
from tests.support.postgres import connect, service_url
from tests.support.processes import OPERATOR, ServiceProcess, free_port, wait_for
from tests.support.servers import ready_server

# Every test here starts a real process or server.
pytestmark = pytest.mark.processes

WAIT = 30.0
# Longer than any test: a stream that ends did not wait for its keepalive write.
NO_KEEPALIVE = "3600"
# Whatever the stream sends ends up here, line by line; None when it ended.
Lines = queue.Queue[str | None]


@pytest.fixture(scope="module")
def server(module_database: URL) -> Iterator[ServiceProcess]:
    with ready_server(module_database, workers=2, EVENTS_KEEPALIVE_SECONDS=NO_KEEPALIVE) as process:
        yield process


def headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": JSONAPI}


def open_stream(port: int, key: str) -> tuple[Lines, threading.Thread]:
    """Read the stream on a thread of its own, as the SDK does."""
    lines: Lines = queue.Queue()
    ready = threading.Event()

    def read() -> None:
        try:
            with httpx.stream(
                "GET",
                f"http://127.0.0.1:{port}/api/v1/events",
                headers={"Authorization": f"Bearer {key}", "Accept": "text/event-stream"},
                timeout=httpx.Timeout(10, read=60),
            ) as response:
                lines.put(f"status {response.status_code} {response.headers['content-type']}")
                ready.set()
                for line in response.iter_lines():
                    lines.put(line)
        except httpx.HTTPError as error:
            lines.put(f"error {type(error).__name__}")
        finally:
            ready.set()
            lines.put(None)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    assert ready.wait(WAIT)
    return lines, thread


def next_event(lines: Lines) -> tuple[str, dict[str, Any]]:
    """The next event's name and data, comments and retry skipped."""
    name = None
    while True:
        line = lines.get(timeout=WAIT)
        assert line is not None, "the stream ended"
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: ") and name is not None:
            return name, json.loads(line.removeprefix("data: "))


def until_end(lines: Lines) -> list[str]:
    seen = []
    while (line := lines.get(timeout=WAIT)) is not None:
        seen.append(line)
    return seen


def sdk_config(key: str, timeout: int) -> dict[str, Any]:
    return {
        "data": {
            "type": "config",
            "id": key,
            "attributes": {
                "name": key,
                "items": {"timeout": {"value": timeout, "type": "NUMBER", "description": None}},
            },
        }
    }


def test_writes_through_either_dialect_reach_the_stream(server: ServiceProcess) -> None:
    assert server.port is not None
    key = create_account_over_http(server.port, "Events")
    lines, _ = open_stream(server.port, key)
    assert lines.get(timeout=WAIT) == "status 200 text/event-stream; charset=utf-8"
    assert lines.get(timeout=WAIT) == "retry: 2000"
    base = f"http://127.0.0.1:{server.port}"
    # New connections each time: with two workers the writes land on either.
    created = httpx.post(
        f"{base}/api/v1/configs", json=sdk_config("streamed", 1), headers=headers(key)
    )
    assert created.status_code == 201, created.text
    assert next_event(lines) == ("config_changed", {"id": "streamed"})
    found = httpx.get(
        f"{base}/v1/configs", params={"filter[key]": "streamed"}, headers=headers(key)
    )
    config_id = found.json()["data"][0]["id"]
    patched = httpx.patch(
        f"{base}/v1/configs/{config_id}",
        json=document("configs", {"items": {"timeout": 2}}, config_id),
        headers=headers(key),
    )
    assert patched.status_code == 200, patched.text
    assert next_event(lines) == ("config_changed", {"id": "streamed"})
    assert httpx.delete(f"{base}/api/v1/configs/streamed", headers=headers(key)).status_code == 204
    assert next_event(lines) == ("config_deleted", {"id": "streamed"})
    discovered = httpx.post(
        f"{base}/api/v1/configs/bulk", json={"configs": [{"id": "found"}]}, headers=headers(key)
    )
    assert discovered.json() == {"registered": 1, "skipped": []}
    assert next_event(lines) == ("configs_changed", {})


def test_flag_writes_through_either_dialect_reach_the_stream(server: ServiceProcess) -> None:
    assert server.port is not None
    key = create_account_over_http(server.port, "Flag events")
    lines, _ = open_stream(server.port, key)
    assert lines.get(timeout=WAIT) == "status 200 text/event-stream; charset=utf-8"
    assert lines.get(timeout=WAIT) == "retry: 2000"
    base = f"http://127.0.0.1:{server.port}"
    flag = {"name": "F", "type": "BOOLEAN", "default": False}
    body = {"data": {"type": "flag", "id": "streamed", "attributes": flag}}
    created = httpx.post(f"{base}/api/v1/flags", json=body, headers=headers(key))
    assert created.status_code == 201, created.text
    assert next_event(lines) == ("flag_changed", {"id": "streamed"})
    flag_id = httpx.get(f"{base}/v1/flags", headers=headers(key)).json()["data"][0]["id"]
    patched = httpx.patch(
        f"{base}/v1/flags/{flag_id}",
        json=document("flags", {"default": True}, flag_id),
        headers=headers(key),
    )
    assert patched.status_code == 200, patched.text
    assert next_event(lines) == ("flag_changed", {"id": "streamed"})
    refused = httpx.put(
        f"{base}/api/v1/flags/streamed",
        json={"data": {"type": "flag", "attributes": {**flag, "default": "no"}}},
        headers=headers(key),
    )
    assert refused.status_code == 422
    assert httpx.delete(f"{base}/api/v1/flags/streamed", headers=headers(key)).status_code == 204
    assert next_event(lines) == ("flag_deleted", {"id": "streamed"})
    declared = {"flags": [{"id": "found", "type": "BOOLEAN", "default": True}]}
    discovered = httpx.post(f"{base}/api/v1/flags/bulk", json=declared, headers=headers(key))
    assert discovered.json() == {"registered": 1, "skipped": []}
    assert next_event(lines) == ("flags_changed", {})


def test_another_accounts_writes_are_not_streamed(server: ServiceProcess) -> None:
    assert server.port is not None
    watcher, writer = (create_account_over_http(server.port, name) for name in ("W", "X"))
    lines, _ = open_stream(server.port, watcher)
    base = f"http://127.0.0.1:{server.port}"
    other = httpx.post(f"{base}/api/v1/configs", json=sdk_config("x", 1), headers=headers(writer))
    assert other.status_code == 201
    own = httpx.post(f"{base}/api/v1/configs", json=sdk_config("w", 1), headers=headers(watcher))
    assert own.status_code == 201
    assert next_event(lines) == ("config_changed", {"id": "w"})


def test_a_bad_key_is_a_401_in_the_error_envelope(server: ServiceProcess) -> None:
    response = httpx.get(
        f"http://127.0.0.1:{server.port}/api/v1/events",
        headers={"Authorization": "Bearer psk_not-a-key-at-all", "Accept": "text/event-stream"},
    )
    assert response.status_code == 401
    assert response.json()["errors"][0]["status"] == "401"


def _key_and_user(base: str, owner: str) -> tuple[str, str, str]:
    """A new MEMBER with a key of their own: the key's secret, its id, the user's id."""
    user = httpx.post(
        f"{base}/v1/users",
        json=document("users", {"email": f"{uuid.uuid4().hex}@example.test", "role": "MEMBER"}),
        headers=headers(owner),
    )
    assert user.status_code == 201, user.text
    user_id = user.json()["data"]["id"]
    body = document("api-keys", {"name": "stream"})
    body["data"]["relationships"] = {"user": {"data": {"type": "users", "id": user_id}}}
    made = httpx.post(f"{base}/v1/api-keys", json=body, headers=headers(owner))
    assert made.status_code == 201, made.text
    return made.json()["data"]["attributes"]["secret"], made.json()["data"]["id"], user_id


@pytest.mark.processes
@pytest.mark.parametrize("ended_by", ["revoking the key", "deleting its user"])
def test_a_revoked_keys_streams_end_before_any_further_event(
    server: ServiceProcess, ended_by: str, record_property: Any
) -> None:
    """Both workers' streams of the key end when the revocation commits: a
    config written after the 204 reaches none of them (the keepalive, when
    the key used to be checked again, is an hour away here)."""
    assert server.port is not None
    owner = create_account_over_http(server.port, "Revoked")
    base = f"http://127.0.0.1:{server.port}"
    streaming_key, key_id, user_id = _key_and_user(base, owner)
    streams = [open_stream(server.port, streaming_key) for _ in range(4)]
    watcher, _ = open_stream(server.port, owner)
    for lines in [lines for lines, _ in streams] + [watcher]:
        assert lines.get(timeout=WAIT) == "status 200 text/event-stream; charset=utf-8"
    revoked_at = time.monotonic()
    path = f"/v1/api-keys/{key_id}" if ended_by == "revoking the key" else f"/v1/users/{user_id}"
    assert httpx.delete(base + path, headers=headers(owner)).status_code == 204
    written = httpx.post(
        f"{base}/api/v1/configs", json=sdk_config("after", 1), headers=headers(owner)
    )
    assert written.status_code == 201, written.text
    # The owner's stream proves the write was announced.
    assert next_event(watcher) == ("config_changed", {"id": "after"})
    for lines, thread in streams:
        seen = until_end(lines)
        assert not [line for line in seen if line.startswith(("event:", "data:"))], seen
        thread.join(WAIT)
        assert not thread.is_alive()
    record_property("streams_ended_after_seconds", round(time.monotonic() - revoked_at, 3))


def _open_and_leave(base: str, key: str) -> float:
    """Open a stream, read its first line and leave; the seconds it took to be
    let in (a 429 is retried: the per-key cap is full of streams not yet freed)."""
    started = time.monotonic()
    while True:
        with httpx.stream(
            "GET", f"{base}/api/v1/events", headers=headers(key), timeout=10
        ) as response:
            if response.status_code == 200:
                assert next(response.iter_lines()) == "retry: 2000"
                return time.monotonic() - started
            assert response.status_code == 429, response.read()
        assert time.monotonic() - started < WAIT, "a stream's slot was never freed"
        time.sleep(0.02)


def _leave_before_the_answer(port: int, key: str) -> None:
    """Send a stream's request and close the connection without reading."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(
            f"GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
        )


def _leave_a_pipelined_stream(port: int, key: str) -> None:
    """Send a stream's request with another pipelined behind it, read the
    stream's first bytes and close the connection (uvicorn told only the
    last request parsed that its client had gone)."""
    request = f"GET {{}} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall((request.format("/api/v1/events") + request.format("/v1/account")).encode())
        answer = client.recv(4096)
        # A 429 once the worker's cap is full of streams whose clients left.
        assert answer.startswith(b"HTTP/1.1 200"), answer[:300]


@pytest.mark.processes
@pytest.mark.parametrize(
    "leaving", ["after the first line", "before the answer", "with a request pipelined behind"]
)
def test_a_stream_frees_its_slot_when_its_client_leaves(
    server: ServiceProcess, leaving: str, record_property: Any
) -> None:
    """A key reconnecting more often than both workers' caps (10 streams each)
    is let in each time: the stream the client left is forgotten at once, not
    at its next write (an hour away here)."""
    assert server.port is not None
    key = create_account_over_http(server.port, "Reconnecting")
    base = f"http://127.0.0.1:{server.port}"
    waits = []
    for _ in range(25):
        if leaving == "before the answer":
            _leave_before_the_answer(server.port, key)
        if leaving == "with a request pipelined behind":
            _leave_a_pipelined_stream(server.port, key)
        waits.append(_open_and_leave(base, key))
    record_property("longest_wait_to_reconnect_seconds", round(max(waits), 3))


def test_streams_per_key_are_capped(module_database: URL) -> None:
    with ready_server(module_database, workers=1) as single:
        assert single.port is not None
        key = create_account_over_http(single.port, "Capped")
        streams = [open_stream(single.port, key)[0] for _ in range(10)]
        assert all(str(lines.get(timeout=WAIT)).startswith("status 200") for lines in streams)
        refused = httpx.get(
            f"http://127.0.0.1:{single.port}/api/v1/events", headers=headers(key), timeout=10
        )
        assert refused.status_code == 429
        assert refused.json()["errors"][0]["status"] == "429"


def test_streams_hold_no_connection_keep_alive_and_stay_out_of_the_metrics(
    module_database: URL,
) -> None:
    """One pooled connection, three open streams: requests still get it, no
    session of the service sits in a transaction, a quiet stream gets a
    keepalive comment (every EVENTS_KEEPALIVE_SECONDS), and the request
    metrics leave streams out."""
    with ready_server(
        module_database,
        workers=1,
        DATABASE_POOL_SIZE="1",
        DATABASE_MAX_OVERFLOW="0",
        EVENTS_KEEPALIVE_SECONDS="1",
    ) as single:
        assert single.port is not None
        base = f"http://127.0.0.1:{single.port}"
        key = create_account_over_http(single.port, "Quiet")
        streams = [open_stream(single.port, key)[0] for _ in range(3)]
        assert all(str(lines.get(timeout=WAIT)).startswith("status 200") for lines in streams)
        for _ in range(3):
            listed = httpx.get(f"{base}/api/v1/configs", headers=headers(key), timeout=10)
            assert listed.status_code == 200, listed.text
        assert asyncio.run(_sessions_in_a_transaction(module_database)) == []
        seen = []
        while (line := streams[0].get(timeout=WAIT)) != ": keepalive":
            assert line is not None, "the stream ended"
            seen.append(line)
        assert seen == ["retry: 2000", ": connected", ""]
        metrics = httpx.get(f"{base}/metrics", headers=OPERATOR, timeout=10).text
        assert 'route="/api/v1/configs"' in metrics
        assert "/api/v1/events" not in metrics


async def _sessions_in_a_transaction(database: URL) -> list[str]:
    connection = await connect(database)
    try:
        rows = await connection.fetch(
            # The service's sessions idle inside a transaction: what a stream
            # holding a pooled connection would look like. Not any session
            # with a transaction at this instant: an autovacuum worker, or the
            # listener's probe while it runs, has one too (under load the
            # suite caught one).
            "SELECT application_name, state, query FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND application_name LIKE 'platform-service%'"
            " AND state LIKE 'idle in transaction%'"
        )
    finally:
        await connection.close()
    return [f"{row['application_name']} {row['state']}: {row['query']}" for row in rows]


@pytest.mark.parametrize("listening_through", ["a transaction-pooling PgBouncer", "a closed port"])
def test_no_stream_is_served_while_nothing_listens(
    module_database: URL, listening_through: str
) -> None:
    """A pooler accepts LISTEN and delivers nothing; a closed port delivers
    nothing either. Either way a stream would stay silent: it is refused (503,
    Retry-After) and the log says why, while the rest of the API serves."""
    with shared_folder() as folder, pgbouncer(module_database, folder / "pgbouncer") as pooled:
        events_url = (
            service_url(pooled)
            if listening_through.endswith("PgBouncer")
            else service_url(module_database.set(port=free_port()))
        )
        with ready_server(module_database, workers=2, EVENTS_DATABASE_URL=events_url) as server:
            assert server.port is not None
            key = create_account_over_http(server.port, "Unheard")
            base = f"http://127.0.0.1:{server.port}"
            for _ in range(2):  # a new connection each time: either worker
                refused = httpx.get(f"{base}/api/v1/events", headers=headers(key), timeout=30)
                assert refused.status_code == 503
                assert refused.headers["Retry-After"] == "5"
                detail = refused.json()["errors"][0]["detail"]
                assert detail.startswith("live updates are not available on this worker now")
            assert httpx.get(f"{base}/api/v1/configs", headers=headers(key)).status_code == 200
            expected = (
                "receives no notifications: EVENTS_DATABASE_URL must reach PostgreSQL directly"
                if listening_through.endswith("PgBouncer")
                else "cannot connect to listen"
            )
            assert expected in detail
            wait_for(lambda: expected in server.logs(), WAIT, "the reason in the log")


def test_a_lost_listener_is_logged_and_so_is_its_return(module_database: URL) -> None:
    """Each worker's listening session is ended by the server: each logs that
    live updates are off, listens again, logs that they are back, and a
    stream opened afterwards receives a write."""
    with ready_server(module_database, workers=2) as server:
        assert server.port is not None
        key = create_account_over_http(server.port, "Relistened")
        workers = server.pids_that_logged("schema at head")
        assert len(workers) == 2, server.logs()
        # A worker listens once its schema is at head: on a busy machine, a
        # moment after it says so.
        wait_for(
            lambda: asyncio.run(_the_listeners(module_database, workers)) == 2,
            WAIT,
            "both workers listening",
        )
        ended = asyncio.run(_end_the_listeners(module_database, workers))
        assert ended == 2, ended
        wait_for(
            lambda: server.logs().count("live updates are back") == 2,
            WAIT,
            "both workers listening again",
        )
        logs = server.logs()
        assert logs.count("the listening connection was lost") == 2, logs
        lines, _ = open_stream(server.port, key)
        assert lines.get(timeout=WAIT) == "status 200 text/event-stream; charset=utf-8"
        created = httpx.post(
            f"http://127.0.0.1:{server.port}/api/v1/configs",
            json=sdk_config("after-the-loss", 1),
            headers=headers(key),
        )
        assert created.status_code == 201, created.text
        assert next_event(lines) == ("config_changed", {"id": "after-the-loss"})


async def _end_the_listeners(database: URL, workers: set[int]) -> int:
    """End the listening sessions of these worker processes (another server
    of the module may listen on the same database)."""
    return await _the_listeners(database, workers, " AND pg_terminate_backend(pid)")


async def _the_listeners(database: URL, workers: set[int], also: str = "") -> int:
    """How many of these worker processes have their listening session (each
    meeting the condition `also`)."""
    connection = await connect(database)
    try:
        found: int = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE '% events %'"
            " AND split_part(application_name, 'pid=', 2) = ANY($1::text[])" + also,
            [str(worker) for worker in workers],
        )
        return found
    finally:
        await connection.close()


def test_streams_per_account_and_per_worker_are_capped(module_database: URL) -> None:
    """A worker keeps half its connections (HTTP_MAX_CONNECTIONS) for requests."""
    with ready_server(module_database, workers=1, HTTP_MAX_CONNECTIONS="8") as single:
        assert single.port is not None
        keys = [create_account_over_http(single.port, f"Busy {n}") for n in range(2)]
        streams = [open_stream(single.port, keys[n % 2])[0] for n in range(4)]
        assert all(str(lines.get(timeout=WAIT)).startswith("status 200") for lines in streams)
        base = f"http://127.0.0.1:{single.port}"
        refused = httpx.get(f"{base}/api/v1/events", headers=headers(keys[0]), timeout=10)
        assert refused.status_code == 429
        assert (
            refused.json()["errors"][0]["detail"] == "this worker already has 4 event streams open"
        )
        assert httpx.get(f"{base}/api/v1/configs", headers=headers(keys[1])).status_code == 200


def test_sigterm_ends_the_streams_at_once(module_database: URL) -> None:
    """uvicorn alone waits for open responses without limit: only the
    service's own signal handling ends a stream."""
    with ready_server(module_database, workers=2) as doomed:
        assert doomed.port is not None
        key = create_account_over_http(doomed.port, "Doomed")
        lines, thread = open_stream(doomed.port, key)
        doomed.signal(signal.SIGTERM)
        until_end(lines)
        thread.join(WAIT)
        assert not thread.is_alive()
        assert doomed.wait(WAIT) == 0


async def test_a_rolled_back_write_notifies_nobody(migrated_database: URL) -> None:
    listener = await connect(migrated_database)
    received: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(CHANNEL, lambda *arguments: received.put_nowait(arguments[-1]))
    engine = create_async_engine(service_url(migrated_database))
    try:
        account_id = uuid.UUID(int=1)
        async with engine.connect() as connection:
            transaction = await connection.begin()
            await announce(connection, account_id, CHANGED, "rolled-back")
            await transaction.rollback()
        async with engine.begin() as connection:
            await announce(connection, account_id, CHANGED, "committed")
        delivered = json.loads(await asyncio.wait_for(received.get(), WAIT))
        assert delivered["id"] == "committed"
        # Notifications arrive before the answer to a later query on the same connection.
        await listener.fetchval("SELECT 1")
        assert received.empty()
    finally:
        await engine.dispose()
        await listener.close()


async def _notify(database: URL, payloads: list[str]) -> None:
    """NOTIFY the channel as any role that can connect could."""
    connection = await connect(database)
    try:
        for payload in payloads:
            await connection.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
    finally:
        await connection.close()


def test_forged_notifications_never_reach_a_stream(
    server: ServiceProcess, module_database: URL
) -> None:
    assert server.port is not None
    key = create_account_over_http(server.port, "Forged")
    base = f"http://127.0.0.1:{server.port}"
    account = httpx.get(f"{base}/v1/account", headers=headers(key)).json()["data"]["id"]
    lines, _ = open_stream(server.port, key)
    assert lines.get(timeout=WAIT) == "status 200 text/event-stream; charset=utf-8"
    forged = [
        {"account": account, "event": 'config_deleted\ndata: {"id": "forged"}\n\nevent: x'},
        {"account": account, "event": "config_deleted\r\ndata: {}", "id": "forged"},
        {"account": account, "event": "job_deleted", "id": "forged"},
        {"account": account, "event": "config_deleted", "id": "forged\n\nevent: config_deleted"},
        {"account": account, "event": "config_changed"},
        {"account": account.upper(), "event": "config_deleted", "id": "forged"},
    ]
    asyncio.run(_notify(module_database, [json.dumps(payload) for payload in forged]))
    created = httpx.post(f"{base}/api/v1/configs", json=sdk_config("real", 1), headers=headers(key))
    assert created.status_code == 201, created.text
    # NOTIFYs are delivered in order: the forged ones came first, and were dropped.
    assert next_event(lines) == ("config_changed", {"id": "real"})
    assert "ignored a config event notification the service did not send" in server.logs()
