"""Per-account quotas (QUOTA_*): the write that would pass one is answered
409 naming the quota and adds nothing, in either dialect; concurrent writers
on two worker processes cannot pass it together."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import URL

from tests.support.api import JSONAPI, Tenant, api_client, create_account_over_http, new_tenant
from tests.support.postgres import connect
from tests.support.servers import ready_server


def _unique() -> str:
    return uuid.uuid4().hex[:12]


def _config_v1() -> tuple[str, str, dict[str, Any]]:
    return (
        "POST",
        "/v1/configs",
        {"data": {"type": "configs", "attributes": {"key": _unique(), "name": "C"}}},
    )


def _config_sdk() -> tuple[str, str, dict[str, Any]]:
    key = _unique()
    return (
        "POST",
        "/api/v1/configs",
        {"data": {"type": "config", "id": key, "attributes": {"name": key}}},
    )


def _environment_v1() -> tuple[str, str, dict[str, Any]]:
    attributes = {"key": _unique(), "name": "E"}
    return "POST", "/v1/environments", {"data": {"type": "environments", "attributes": attributes}}


def _environment_sdk() -> tuple[str, str, dict[str, Any]]:
    attributes = {"name": "E", "color": None, "classification": "STANDARD", "managed": False}
    body = {"data": {"type": "environment", "id": _unique(), "attributes": attributes}}
    return "POST", "/api/v1/environments", body


def _api_key() -> tuple[str, str, dict[str, Any]]:
    return "POST", "/v1/api-keys", {"data": {"type": "api-keys", "attributes": {"name": "K"}}}


def _user() -> tuple[str, str, dict[str, Any]]:
    attributes = {"email": f"{_unique()}@example.test", "role": "VIEWER"}
    return "POST", "/v1/users", {"data": {"type": "users", "attributes": attributes}}


def _contexts() -> tuple[str, str, dict[str, Any]]:
    report = {
        "contexts": [{"type": "service", "key": _unique()}, {"type": "host", "key": _unique()}]
    }
    return "POST", "/api/v1/contexts/bulk", report


# What each quota counts: the setting, the table and rows counted, how to add some.
KINDS: dict[str, tuple[str, str, Callable[[], tuple[str, str, dict[str, Any]]]]] = {
    "configs (/v1)": ("QUOTA_CONFIGS", "configs", _config_v1),
    "configs (/api/v1)": ("QUOTA_CONFIGS", "configs", _config_sdk),
    "environments (/v1)": ("QUOTA_ENVIRONMENTS", "environments", _environment_v1),
    "environments (/api/v1)": ("QUOTA_ENVIRONMENTS", "environments", _environment_sdk),
    "API keys": ("QUOTA_API_KEYS", "api_keys WHERE revoked_at IS NULL AND", _api_key),
    "users": ("QUOTA_USERS", "users", _user),
    "contexts": ("QUOTA_CONTEXTS", "contexts", _contexts),
}


async def _held(database: URL, rows: str, account_id: str) -> int:
    where = f"{rows} account_id = $1" if rows.endswith("AND") else f"{rows} WHERE account_id = $1"
    connection = await connect(database)
    try:
        return int(
            await connection.fetchval(f"SELECT count(*) FROM {where}", uuid.UUID(account_id))
        )
    finally:
        await connection.close()


async def _call(tenant: Tenant, request: tuple[str, str, dict[str, Any]]) -> httpx.Response:
    method, path, body = request
    return await tenant.call(method, path, body=body)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_write_beyond_the_quota_is_refused_and_adds_nothing(
    migrated_database: URL, kind: str
) -> None:
    setting, rows, request = KINDS[kind]
    # An account starts with an owner, their key and default environments:
    # its quota here leaves room for one more write (two contexts).
    async with api_client(migrated_database) as client:
        tenant = await new_tenant(client)
        held = await _held(migrated_database, rows, tenant.account_id)
    room = 2 if setting == "QUOTA_CONTEXTS" else 1
    async with api_client(migrated_database, **{setting.lower(): held + room}) as client:
        tenant.client = client
        assert (await _call(tenant, request())).status_code in (200, 201)
        refused = await _call(tenant, request())
        assert refused.status_code == 409, refused.text
        detail = refused.json()["errors"][0]["detail"]
        assert f"quota of {held + room} " in detail
        assert f"({setting})" in detail
        assert await _held(migrated_database, rows, tenant.account_id) == held + room


async def test_a_revoked_key_leaves_room_for_another(migrated_database: URL) -> None:
    async with api_client(migrated_database) as client:
        tenant = await new_tenant(client)
    async with api_client(migrated_database, quota_api_keys=2) as client:
        tenant.client = client
        made = await _call(tenant, _api_key())
        assert made.status_code == 201
        assert (await _call(tenant, _api_key())).status_code == 409
        revoked = await tenant.call("DELETE", f"/v1/api-keys/{made.json()['data']['id']}")
        assert revoked.status_code == 204
        assert (await _call(tenant, _api_key())).status_code == 201


# The /v1 create at the root is one statement that commits on its own; the
# SDK's is a transaction (it locks the account's tree); both count alike.
RACES = {
    "one-statement creates (/v1)": [_config_v1] * 10,
    "transactions (/api/v1)": [_config_sdk] * 10,
    "both at once": [_config_v1, _config_sdk] * 5,
}


@pytest.mark.processes
@pytest.mark.parametrize("race", RACES)
def test_concurrent_writers_on_two_workers_cannot_pass_the_quota_together(
    module_database: URL, race: str
) -> None:
    """Ten configs created at once through both worker processes, with room
    for three: three are created, seven refused."""
    with ready_server(module_database, workers=2, QUOTA_CONFIGS="3") as server:
        assert server.port is not None
        key = create_account_over_http(server.port, "Racing")
        headers = {"Authorization": f"Bearer {key}", "Content-Type": JSONAPI}

        def create(request: Callable[[], tuple[str, str, dict[str, Any]]]) -> int:
            _, path, body = request()
            url = f"http://127.0.0.1:{server.port}{path}"
            return httpx.post(url, json=body, headers=headers, timeout=30).status_code

        with ThreadPoolExecutor(10) as pool:
            statuses = sorted(pool.map(create, RACES[race]))
    assert statuses == [201] * 3 + [409] * 7


@pytest.mark.processes
def test_discovery_and_creates_in_one_account_never_deadlock(module_database: URL) -> None:
    """Discovery inserts its batch before it takes the account's quota lock;
    a create at the root takes the lock, then the account's count. The
    count's triggers take the lock first too, so neither waits for the
    other in a cycle: every answer is a 2xx (nothing refused: the quota is
    far), none a 503 for a deadlock."""
    with ready_server(module_database, workers=2) as server:
        assert server.port is not None
        key = create_account_over_http(server.port, "Discovering")
        headers = {"Authorization": f"Bearer {key}", "Content-Type": JSONAPI}
        base = f"http://127.0.0.1:{server.port}"

        def write(n: int) -> list[int]:
            statuses = []
            with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
                for round_ in range(15):
                    if n % 2:
                        found = [{"id": f"found-{n}-{round_}-{i}"} for i in range(3)]
                        answer = client.post("/api/v1/configs/bulk", json={"configs": found})
                    else:
                        _, path, body = _config_v1()
                        answer = client.post(path, json=body)
                    statuses.append(answer.status_code)
            return statuses

        with ThreadPoolExecutor(12) as pool:
            statuses = [status for run in pool.map(write, range(12)) for status in run]
    assert set(statuses) <= {200, 201}, sorted(set(statuses))


async def test_discovery_beyond_the_quota_keeps_its_earlier_batches(migrated_database: URL) -> None:
    """Discovery commits batch by batch: the batch that would pass the quota
    is refused and rolled back, the ones before it stay (the SDK retries)."""
    async with api_client(migrated_database, quota_configs=60) as client:
        tenant = await new_tenant(client)
        report = {"configs": [{"id": f"found-{n:03}"} for n in range(100)]}
        refused = await tenant.call("POST", "/api/v1/configs/bulk", body=report)
        assert refused.status_code == 409, refused.text
        assert "(QUOTA_CONFIGS)" in refused.json()["errors"][0]["detail"]
        assert await _held(migrated_database, "configs", tenant.account_id) == 50
        again = await tenant.call(
            "POST", "/api/v1/configs/bulk", body={"configs": report["configs"][:60]}
        )
        assert again.json() == {"registered": 10, "skipped": []}
