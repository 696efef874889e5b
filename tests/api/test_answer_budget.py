"""Large /api/v1 pages are held within a per-worker budget (ANSWER_BUFFER_BYTES)
and sent in pieces, through a real server with two workers: clients that
request a large page and read nothing cannot make a worker hold more."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy.engine import URL

from tests.support.api import LARGE_PAGE_CONFIGS, account_with_a_large_page
from tests.support.processes import ServiceProcess, wait_for
from tests.support.servers import ready_server

CONFIGS = LARGE_PAGE_CONFIGS
WAIT = 60.0


@pytest.fixture(scope="module")
def server(module_database: URL) -> Iterator[ServiceProcess]:
    with ready_server(module_database, workers=2, ANSWER_BUFFER_BYTES=str(1024 * 1024)) as process:
        yield process


def _request_and_read_nothing(port: int, key: str) -> socket.socket:
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.settimeout(WAIT)
    client.connect(("127.0.0.1", port))
    client.sendall(
        f"GET /api/v1/configs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
    )
    return client


def _answer(client: socket.socket) -> tuple[bytes, bytes]:
    """The head and the whole body (by its Content-Length) of the next answer."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        raw += client.recv(1 << 16)
    head, _, body = raw.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += client.recv(1 << 16)
    return head, body


def _status(client: socket.socket) -> int:
    head = b""
    while b"\r\n" not in head:
        head += client.recv(1)
    return int(head.split()[1])


@pytest.fixture(scope="module")
def large_key(server: ServiceProcess) -> str:
    assert server.port is not None
    return account_with_a_large_page(server.port)


@pytest.mark.processes
def test_clients_that_read_nothing_cannot_make_a_worker_hold_more(
    server: ServiceProcess, large_key: str
) -> None:
    """Eight 5 MiB pages requested and left unread, against two workers that
    may each hold 1 MiB: one per worker is being sent, the others are
    answered 503 at once; read, a page is whole, and once the unread ones
    are closed, the budget is free again."""
    assert server.port is not None
    key = large_key
    base = f"http://127.0.0.1:{server.port}"
    headers = {"Authorization": f"Bearer {key}"}
    clients = [_request_and_read_nothing(server.port, key) for _ in range(8)]
    try:
        statuses = [_status(client) for client in clients]
        assert statuses.count(200) <= 2, statuses
        assert statuses.count(503) >= 6, statuses
        reader = clients[statuses.index(200)]
        page = json.loads(_answer(reader)[1])
        assert [config["id"] for config in page["data"]] == sorted(
            f"large-{number}" for number in range(CONFIGS)
        )
    finally:
        for client in clients:
            client.close()

    def served() -> bool:
        answer = httpx.get(f"{base}/api/v1/configs", headers=headers, timeout=WAIT)
        return answer.status_code == 200 and len(answer.json()["data"]) == CONFIGS

    # Both workers, again and again: the unread answers gave their bytes back.
    wait_for(lambda: all(served() for _ in range(6)), WAIT, "the budget given back")


@pytest.mark.processes
def test_a_spent_budget_is_a_503_in_the_error_envelope(
    server: ServiceProcess, large_key: str
) -> None:
    assert server.port is not None
    key = large_key
    clients = [_request_and_read_nothing(server.port, key) for _ in range(6)]
    try:
        statuses = [_status(client) for client in clients]
        head, body = _answer(clients[statuses.index(503)])
    finally:
        for client in clients:
            client.close()
    assert b"retry-after: 1" in head.lower().split(b"\r\n")
    error = json.loads(body)["errors"][0]
    assert error["status"] == "503"
    assert "ANSWER_BUFFER_BYTES" in error["detail"]
