"""Each account's share of a worker (ACCOUNT_POOL_SHARE), through a real
server with two workers: while one account's requests hold every connection
they may, another account is still served."""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy.engine import URL

from tests.support.api import JSONAPI, account_with_a_large_page, create_account_over_http
from tests.support.postgres import connect, take_tree_lock
from tests.support.servers import ready_server

WAIT = 60.0
NOISY_REQUESTS = 6
# Connections holding a slow body under a made-up key: more than both
# workers' share of the keys they do not know yet (5 each by default).
SLOW_BODIES = 30


def _headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": JSONAPI}


@pytest.mark.processes
def test_an_account_holding_its_share_leaves_connections_to_others(module_database: URL) -> None:
    """Two pooled connections per worker, half for one account: six config
    writes of one account wait on its tree lock (held here), each holding
    its connection; another account's reads are answered meanwhile, and the
    writes complete once the lock is let go."""
    with ready_server(
        module_database,
        workers=2,
        DATABASE_POOL_SIZE="2",
        DATABASE_MAX_OVERFLOW="0",
        ACCOUNT_POOL_SHARE="0.5",
    ) as server:
        base = f"http://127.0.0.1:{server.port}"
        noisy, quiet = (create_account_over_http(server.port or 0, name) for name in "NQ")
        account = httpx.get(f"{base}/v1/account", headers=_headers(noisy)).json()["data"]["id"]
        # Each worker learns which account the noisy key is (new connections: either worker).
        for _ in range(20):
            assert httpx.get(f"{base}/api/v1/configs", headers=_headers(noisy)).status_code == 200
        holding, release = threading.Event(), threading.Event()

        def hold_the_tree_lock() -> None:
            async def hold() -> None:
                connection = await connect(module_database)
                try:
                    async with connection.transaction():
                        await take_tree_lock(connection, account)
                        holding.set()
                        await asyncio.get_running_loop().run_in_executor(None, release.wait, WAIT)
                finally:
                    await connection.close()

            asyncio.run(hold())

        def write(number: int) -> int:
            body = {
                "data": {"type": "config", "id": f"noisy-{number}", "attributes": {"name": "N"}}
            }
            return httpx.post(
                f"{base}/api/v1/configs", json=body, headers=_headers(noisy), timeout=WAIT
            ).status_code

        locker = threading.Thread(target=hold_the_tree_lock, daemon=True)
        locker.start()
        assert holding.wait(WAIT)
        with ThreadPoolExecutor(NOISY_REQUESTS) as pool:
            writes = [pool.submit(write, number) for number in range(NOISY_REQUESTS)]
            try:
                quiet_reads = [
                    httpx.get(f"{base}/api/v1/configs", headers=_headers(quiet), timeout=WAIT)
                    for _ in range(6)
                ]
                noisy_done_meanwhile = sum(write.done() for write in writes)
            finally:
                release.set()
            statuses = [write.result() for write in writes]
        locker.join(WAIT)
    assert [read.status_code for read in quiet_reads] == [200] * 6, quiet_reads[0].text
    assert noisy_done_meanwhile == 0
    assert set(statuses) <= {201, 503}, statuses
    assert statuses.count(201) >= 2, statuses


@pytest.mark.processes
def test_a_page_left_unread_does_not_hold_the_accounts_share(module_database: URL) -> None:
    """One slot per account and worker: while a 5 MiB page is left unread on
    each worker, the same account's next requests are served (the slot was
    given back when the page's answer started, its connection already back
    in the pool)."""
    with ready_server(
        module_database, workers=2, DATABASE_POOL_SIZE="2", DATABASE_MAX_OVERFLOW="0"
    ) as server:
        assert server.port is not None
        key = account_with_a_large_page(server.port)
        base = f"http://127.0.0.1:{server.port}"
        for _ in range(20):  # each worker learns the key's account
            assert (
                httpx.get(f"{base}/api/v1/configs/large-0", headers=_headers(key)).status_code
                == 200
            )
        unread = []
        for _ in range(4):
            client = socket.socket()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.settimeout(WAIT)
            client.connect(("127.0.0.1", server.port))
            client.sendall(
                f"GET /api/v1/configs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
            )
            unread.append(client)
        try:
            assert all(client.recv(12).endswith(b"200") for client in unread)
            statuses = [
                httpx.get(
                    f"{base}/api/v1/configs/large-1", headers=_headers(key), timeout=WAIT
                ).status_code
                for _ in range(6)
            ]
        finally:
            for client in unread:
                client.close()
    assert statuses == [200] * 6


@pytest.mark.processes
def test_slow_bodies_under_made_up_keys_leave_new_keys_served(module_database: URL) -> None:
    """Made-up keys of the right shape, each on a connection that sends a
    write's head and one byte of its body, then nothing (until the body
    timeout closes it): a new key's first requests, which share the keys not
    yet known on a worker, are still answered. A request's share is taken
    once its body has arrived, and the made-up keys are refused (401) then."""
    with ready_server(module_database, workers=2) as server:
        assert server.port is not None
        key = create_account_over_http(server.port)  # never used: no worker knows it
        slow = []
        try:
            for _ in range(SLOW_BODIES):
                client = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
                made_up = "psk_" + secrets.token_urlsafe(32)
                client.sendall(
                    (
                        "POST /v1/configs HTTP/1.1\r\nHost: x\r\n"
                        f"Authorization: Bearer {made_up}\r\nContent-Type: {JSONAPI}\r\n"
                        "Content-Length: 100\r\n\r\n{"
                    ).encode()
                )
                slow.append(client)
            # Time for each to reach its worker and, were shares taken before
            # the body, to take the share of the keys not known yet.
            time.sleep(1.0)
            answers = [
                httpx.get(
                    f"http://127.0.0.1:{server.port}/v1/configs",
                    headers=_headers(key),
                    timeout=WAIT,
                )
                for _ in range(6)
            ]
        finally:
            for client in slow:
                client.close()
    assert [answer.status_code for answer in answers] == [200] * 6, [a.text for a in answers]
