"""Wrong credentials never lock out right ones: a client sending wrong keys
from an address (every client behind a proxy uvicorn does not trust shares
one) is throttled, while the valid keys and the operator token presented from
that same address are served, on every worker of a real server."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy.engine import URL

from tests.support.api import JSONAPI, account_with_key, document
from tests.support.processes import OPERATOR, ServiceProcess
from tests.support.servers import ready_server

pytestmark = pytest.mark.processes

# An untrusted peer: another loopback address than the test's own.
ATTACKER = "127.0.0.6"
FAILURES_PER_MINUTE = 5
NEVER_USED_KEYS = 20


@pytest.fixture(scope="module")
def server(module_database: URL) -> Iterator[ServiceProcess]:
    with ready_server(
        module_database, shipped=True, RATE_LIMIT_AUTH_FAILURES=str(FAILURES_PER_MINUTE)
    ) as process:
        yield process


def request_from(
    address: str, server: ServiceProcess, path: str, credential: str
) -> httpx.Response:
    """One request on a new connection (so requests spread over the workers)
    from a client bound to `address`."""
    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(transport=transport, timeout=10) as client:
        return client.get(
            f"http://127.0.0.1:{server.port}{path}",
            headers={"Authorization": f"Bearer {credential}"},
        )


# Refusals in a row taken to mean every worker refuses: each request is a new
# connection, which either worker may accept, and each worker keeps its own
# count. After ten, CI once had a later failure answered 401: most likely by a
# worker that had taken too few of them to reach its limit.
IN_A_ROW = 40


def locked_out_by_wrong_keys(server: ServiceProcess, address: str) -> list[int]:
    """Wrong keys from `address` until IN_A_ROW in a row are refused 429 (every
    worker then refuses that address's failures); their statuses."""
    statuses: list[int] = []
    while statuses[-IN_A_ROW:] != [429] * IN_A_ROW:
        assert len(statuses) < 600, f"wrong keys never throttled: {statuses}"
        wrong = "psk_" + f"{len(statuses):043d}"
        statuses.append(request_from(address, server, "/v1/account", wrong).status_code)
    return statuses


def never_used_keys(server: ServiceProcess, count: int) -> list[str]:
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as client:
        owner_key, included = account_with_key(client, "Lockout")
        owner = next(item for item in included if item["type"] == "users")
        headers = {"Authorization": f"Bearer {owner_key}", "Content-Type": JSONAPI}
        secrets = []
        for number in range(count):
            body = document("api-keys", {"name": f"key {number}"}, user=owner["id"])
            created = client.post("/v1/api-keys", headers=headers, json=body)
            assert created.status_code == 201, created.text
            secrets.append(created.json()["data"]["attributes"]["secret"])
        return secrets


def test_an_address_that_fails_keeps_its_valid_keys_and_the_operator_token(
    server: ServiceProcess,
) -> None:
    keys = never_used_keys(server, NEVER_USED_KEYS)
    statuses = locked_out_by_wrong_keys(server, ATTACKER)
    assert set(statuses) == {401, 429}

    served = [request_from(ATTACKER, server, "/v1/account", key).status_code for key in keys]
    assert served == [200] * NEVER_USED_KEYS
    operator = OPERATOR["Authorization"].removeprefix("Bearer ")
    metrics = [request_from(ATTACKER, server, "/metrics", operator).status_code for _ in range(6)]
    assert metrics == [200] * 6

    # The failures themselves stay throttled, wrong operator tokens included ...
    assert request_from(ATTACKER, server, "/v1/account", "psk_" + "q" * 43).status_code == 429
    assert request_from(ATTACKER, server, "/metrics", "x" * 40).status_code == 429
    assert request_from(ATTACKER, server, "/v1/account", "not a key").status_code == 429
    # ... for that address only.
    assert request_from("127.0.0.1", server, "/v1/account", "psk_" + "q" * 43).status_code == 401
