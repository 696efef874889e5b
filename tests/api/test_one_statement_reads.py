"""The round trips of the hot requests. A config read is one statement: the
caller's key check and the read together, outside any transaction (no BEGIN,
no COMMIT); every refusal of the caller still comes before anything the read
or the parameters would tell. A create is one transaction of three
statements."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine
from sqlalchemy.pool import Pool

from service.accounts.key_secrets import new_key
from service.db.driver import Autocommit
from service.db.statement_pool import StatementPool
from service.quotas import AccountQuotas, Kind
from tests.support.api import Tenant, api_client, new_tenant
from tests.support.postgres import connect


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every statement the app's pooled connections send, from the next
    checkout on, in either pool (service/db/statement_pool.py): asyncpg's own
    (its query log: the driver statements, BEGIN and COMMIT) and SQLAlchemy's
    (which asyncpg runs as prepared statements, outside its query log)."""
    queries: list[str] = []
    logged: set[int] = set()

    def log(driver: Any) -> None:
        # The server's process, not the object: the driver's pool lends each
        # time a new proxy of the same connection.
        if driver.get_server_pid() not in logged:
            logged.add(driver.get_server_pid())
            driver.add_query_logger(lambda record: queries.append(record.query))

    def checked_out(dbapi_connection: Any, *_: Any) -> None:
        log(dbapi_connection.driver_connection)

    lend = StatementPool.acquire

    async def lent(pool: StatementPool) -> Autocommit:
        connection = await lend(pool)
        log(connection.driver)
        return connection

    monkeypatch.setattr(StatementPool, "acquire", lent)

    def executed(_connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        queries.append(statement)

    event.listen(Pool, "checkout", checked_out)
    event.listen(Engine, "before_cursor_execute", executed)
    try:
        yield queries
    finally:
        event.remove(Pool, "checkout", checked_out)
        event.remove(Engine, "before_cursor_execute", executed)


async def settled(sent: list[str]) -> list[str]:
    """`sent` once asyncpg's query log has caught up: it calls its loggers
    with `call_soon`, so the last statement of a request is logged on the
    event loop's next turn, which need not have come when the answer has."""
    await asyncio.sleep(0)
    return sent


async def test_each_config_read_is_one_statement_with_its_callers_check(
    migrated_database: URL, sent: list[str]
) -> None:
    async with api_client(migrated_database) as client:
        tenant = await new_tenant(client, "Reads")
        base = {"key": "base", "name": "Base", "items": {"a": 1}}
        parent = (await tenant.create("configs", base))["id"]
        child = {"key": "svc", "name": "Svc", "items": {"b": 2}}
        child_id = (await tenant.create("configs", child, parent=parent))["id"]
        reads = {
            "get one": f"/v1/configs/{child_id}",
            "resolve": f"/v1/configs/{child_id}/resolved?environment=production",
            "a page": "/v1/configs?page[size]=50",
            "a filtered page": '/v1/configs?filter[items]={"b":2}',
            "a missing config": f"/v1/configs/{uuid.uuid4()}",
            "the SDK's get": "/api/v1/configs/svc",
            "the SDK's get of a missing config": "/api/v1/configs/nothing-here",
            "the SDK's list": "/api/v1/configs",
            "the SDK's list, filtered and counted": "/api/v1/configs?filter[parent]=base"
            "&filter[search]=SV&filter[managed]=true&meta[total]=true&sort=-name",
            "the SDK's page past the end, counted": "/api/v1/configs?page[number]=5"
            "&page[size]=1&meta[total]=true",
        }
        await _each_one_statement(tenant, sent, reads, "configs")
        flag = {"type": "BOOLEAN", "default": False, "values": None}
        for key in ("dark-mode", "beta"):
            body = {"data": {"type": "flag", "id": key, "attributes": {**flag, "name": key}}}
            made = await tenant.call("POST", "/api/v1/flags", body=body)
            assert made.status_code == 201, made.text
        flag_id = (await tenant.call("GET", "/v1/flags?sort=-created_at")).json()["data"][1]["id"]
        flag_reads = {
            "the SDK's get of a flag": "/api/v1/flags/dark-mode",
            "the SDK's get of a missing flag": "/api/v1/flags/nothing-here",
            "a flag by id": f"/v1/flags/{flag_id}",
            "a missing flag by id": f"/v1/flags/{uuid.uuid4()}",
            "the SDK's list of flags": "/api/v1/flags",
            "the /v1 list of flags": "/v1/flags?page[size]=1&sort=-created_at",
            "the SDK's list of flags, filtered and counted": "/api/v1/flags?filter[type]=BOOLEAN"
            "&filter[managed]=true&filter[search]=DARK&meta[total]=true&sort=-type",
        }
        await _each_one_statement(tenant, sent, flag_reads, "flags")
        environment_id = (await tenant.call("GET", "/v1/environments")).json()["data"][0]["id"]
        owner = await tenant.call("GET", f"/v1/users/{tenant.owner_id}")
        owner_email = owner.json()["data"]["attributes"]["email"]
        viewer = await tenant.create("users", {"email": "Viewer@Example.test", "role": "VIEWER"})
        account_reads = {
            "the caller's account": "/v1/account",
            "the SDK's account": "/api/v1/accounts/current",
            "a user": f"/v1/users/{tenant.owner_id}",
            "a missing user": f"/v1/users/{uuid.uuid4()}",
            "an environment": f"/v1/environments/{environment_id}",
            "a missing environment": f"/v1/environments/{uuid.uuid4()}",
            "the list of users": "/v1/users",
            "the list of users, filtered": f"/v1/users?filter[email]={owner_email.upper()}"
            "&filter[role]=OWNER",
        }
        await _each_one_statement(tenant, sent, account_reads, "")
        listed_users = (await tenant.call("GET", account_reads["the list of users"])).json()
        assert [item["id"] for item in listed_users["data"]] == [tenant.owner_id, viewer["id"]]
        owners = (await tenant.call("GET", account_reads["the list of users, filtered"])).json()
        assert [item["id"] for item in owners["data"]] == [tenant.owner_id]
        viewers = await tenant.call("GET", "/v1/users?filter[email]=viewer@example.TEST")
        assert [item["id"] for item in viewers.json()["data"]] == [viewer["id"]]
        newest = (await tenant.call("GET", flag_reads["the /v1 list of flags"])).json()
        assert [item["attributes"]["key"] for item in newest["data"]] == ["beta"]
        (await settled(sent)).clear()
        older = await tenant.call("GET", newest["links"]["next"])
        assert [item["attributes"]["key"] for item in older.json()["data"]] == ["dark-mode"]
        # After a cursor: another shape of the statement, still one.
        assert len(await settled(sent)) == 1, sent
        account = (await tenant.call("GET", "/v1/account")).json()["data"]
        assert account["id"] == tenant.account_id
        user = (await tenant.call("GET", account_reads["a user"])).json()["data"]
        assert user["id"] == tenant.owner_id
        assert "caller_role" not in json.dumps(user)
        by_id = (await tenant.call("GET", flag_reads["a flag by id"])).json()["data"]
        assert by_id["attributes"]["key"] == "dark-mode"
        sdk_flag = (await tenant.call("GET", flag_reads["the SDK's get of a flag"])).json()["data"]
        assert sdk_flag["id"] == "dark-mode"
        assert sdk_flag["attributes"]["name"] == "dark-mode"
        flags = (await tenant.call("GET", flag_reads["the SDK's list of flags"])).json()
        assert [item["id"] for item in flags["data"]] == ["beta", "dark-mode"]
        found = await tenant.call(
            "GET", flag_reads["the SDK's list of flags, filtered and counted"]
        )
        assert [item["id"] for item in found.json()["data"]] == ["dark-mode"]
        assert found.json()["meta"]["pagination"]["total"] == 1
        by_key = (await tenant.call("GET", reads["the SDK's get"])).json()["data"]
        assert by_key["attributes"]["parent"] == "base"
        resolved = await tenant.call("GET", reads["resolve"])
        assert resolved.json()["data"]["attributes"]["items"] == {"a": 1, "b": 2}
        assert resolved.json()["meta"]["chain"] == [parent, child_id]
        sdk_list = (await tenant.call("GET", reads["the SDK's list"])).json()
        assert [item["id"] for item in sdk_list["data"]] == ["base", "svc"]
        assert sdk_list["meta"]["pagination"] == {"page": 1, "size": 1000}
        filtered = (await tenant.call("GET", reads["the SDK's list, filtered and counted"])).json()
        assert [item["id"] for item in filtered["data"]] == ["svc"]
        assert filtered["meta"]["pagination"]["total"] == 1
        past = (await tenant.call("GET", reads["the SDK's page past the end, counted"])).json()
        assert past["data"] == []
        assert past["meta"]["pagination"] == {"page": 5, "size": 1, "total": 2, "total_pages": 2}
        by_name = await tenant.call("GET", "/api/v1/configs?sort=-name&page[size]=1&page[number]=2")
        assert [item["id"] for item in by_name.json()["data"]] == ["base"]
        listed = await tenant.call("GET", reads["a page"])
        assert [item["id"] for item in listed.json()["data"]] == [parent, child_id]
        descending = await tenant.call("GET", "/v1/configs?sort=-created_at")
        assert [item["id"] for item in descending.json()["data"]] == [child_id, parent]


async def _each_one_statement(
    tenant: Tenant, sent: list[str], reads: dict[str, str], table: str
) -> None:
    """Each read answered (404 when its name says "missing"), in one
    statement holding the caller's check and naming `table`."""
    for name, path in reads.items():
        (await settled(sent)).clear()
        answer = await tenant.call("GET", path)
        assert answer.status_code == (404 if "missing" in name else 200), (name, answer.text)
        assert len(await settled(sent)) == 1, (name, sent)
        assert "api_keys" in sent[0], (name, sent)
        assert table in sent[0], (name, sent)


async def test_a_caller_who_may_not_read_learns_nothing_from_the_parameters(
    migrated_database: URL,
) -> None:
    """FastAPI refuses a route's parameters before its handler (and its one
    statement) runs: the caller is checked first all the same. (From one
    address, a thirty-first wrong key in a minute is answered 429, not 401.)"""
    async with api_client(migrated_database, rate_limit_auth_failures=1000) as client:
        tenant = await new_tenant(client, "Order")
        config_id = (await tenant.create("configs", {"key": "svc", "name": "Svc"}))["id"]
        unknown = new_key()
        refused = {
            "no environment": f"/v1/configs/{config_id}/resolved",
            "an environment too long": f"/v1/configs/{config_id}/resolved?environment={'e' * 65}",
            "a page too large": "/v1/configs?page[size]=100000",
            "a page of NaN": "/v1/configs?page[size]=NaN",
            "an id that is not one": "/v1/configs/not-an-id",
            "an unknown parameter": f"/v1/configs/{config_id}?undeclared=1",
            "a key the SDK cannot have": "/api/v1/configs/" + "k" * 200,
            "a cursor this API did not issue": "/v1/configs?page[after]=garbage",
            "a filter that is not JSON": "/v1/configs?filter[items]={not",
            "a filter with NaN": '/v1/configs?filter[items]={"a":NaN}',
            "a filter with a NUL": '/v1/configs?filter[items]={"a":"\\u0000"}',
            "a cursor, for users": "/v1/users?page[after]=garbage",
            "a cursor, for environments": "/v1/environments?page[after]=garbage",
            "a cursor, for API keys": "/v1/api-keys?page[after]=garbage",
            "a cursor, for flags": "/v1/flags?page[after]=garbage",
            "an SDK page of none": "/api/v1/configs?page[size]=0",
            "an SDK order it does not know": "/api/v1/configs?sort=bogus",
            "an SDK search too long": "/api/v1/configs?filter[search]=" + "s" * 201,
            "a flag type it does not know": "/api/v1/flags?filter[type]=NOPE",
            "a flag page of none": "/api/v1/flags?page[size]=0",
            "a flag id that is not one": "/v1/flags/not-an-id",
            "a user id that is not one": "/v1/users/not-an-id",
            "an environment id that is not one": "/v1/environments/not-an-id",
            "a role that is not one": "/v1/users?filter[role]=NOPE",
            "an email with a NUL": "/v1/users?filter[email]=a%00b",
            "a flags page too large": "/v1/flags?page[size]=100000",
        }
        for name, path in refused.items():
            anonymous = await tenant.call("GET", path, key=unknown)
            assert anonymous.status_code == 401, (name, anonymous.text)
            assert anonymous.headers["www-authenticate"].startswith("Bearer"), name
            known = await tenant.call("GET", path)
            assert known.status_code in (400, 404, 422), (name, known.text)
        # A known caller is told of an unknown parameter before a missing one.
        both = await tenant.call("GET", f"/v1/configs/{config_id}/resolved?undeclared=1")
        assert both.status_code == 400
        assert "unknown query parameter 'undeclared'" in both.json()["errors"][0]["detail"]
        # A revoked key reads nothing, its own account's configs included.
        made = await tenant.create("api-keys", {"name": "short-lived"}, user=tenant.owner_id)
        secret = made["attributes"]["secret"]
        assert (await tenant.call("GET", f"/v1/configs/{config_id}", key=secret)).status_code == 200
        revoked = await tenant.call("DELETE", f"/v1/api-keys/{made['id']}")
        assert revoked.status_code == 204, revoked.text
        for path in (
            f"/v1/configs/{config_id}",
            "/v1/configs",
            "/api/v1/configs",
            "/api/v1/flags",
            refused["no environment"],
        ):
            assert (await tenant.call("GET", path, key=secret)).status_code == 401, path


async def test_a_key_reads_nothing_of_another_account(migrated_database: URL) -> None:
    async with api_client(migrated_database) as client:
        owner = await new_tenant(client, "Owner")
        other = await new_tenant(client, "Other")
        config_id = (await owner.create("configs", {"key": "svc", "name": "Svc"}))["id"]
        assert (await other.call("GET", f"/v1/configs/{config_id}")).status_code == 404
        resolved = await other.call(
            "GET", f"/v1/configs/{config_id}/resolved?environment=production"
        )
        assert resolved.status_code == 404
        assert (await other.call("GET", "/v1/configs")).json()["data"] == []
        for path in (f"/v1/users/{owner.owner_id}", f"/v1/flags/{uuid.uuid4()}"):
            assert (await other.call("GET", path)).status_code == 404, path
        flag = {"type": "BOOLEAN", "default": False, "values": None, "name": "Owned"}
        body = {"data": {"type": "flag", "id": "owned", "attributes": flag}}
        made = await owner.call("POST", "/api/v1/flags", body=body)
        assert made.status_code == 201, made.text
        assert (await other.call("GET", "/v1/flags")).json()["data"] == []
        users = (await other.call("GET", "/v1/users")).json()["data"]
        assert [user["id"] for user in users] == [other.owner_id]
        assert (await other.call("GET", "/v1/account")).json()["data"]["id"] == other.account_id


async def test_a_create_at_the_root_is_one_statement(
    migrated_database: URL, sent: list[str]
) -> None:
    """The caller's check, the quota (its lock and the account's count), the
    insert and the NOTIFY of the change: one statement, which commits on its
    own before the answer. A create under a parent stays a transaction."""
    async with api_client(migrated_database, quota_configs=3) as client:
        tenant = await new_tenant(client, "Creates")
        first = await tenant.create("configs", {"key": "first", "name": "First"})
        (await settled(sent)).clear()
        await tenant.create("configs", {"key": "second", "name": "Second", "items": {"x": 1}})
        assert len(await settled(sent)) == 1, sent
        for part in ("api_keys", "pg_advisory_xact_lock", "config_counts", "INSERT INTO configs"):
            assert part in sent[0], (part, sent)
        assert "pg_notify" in sent[0], sent
        sent.clear()
        await tenant.create("configs", {"key": "child", "name": "Child"}, parent=first["id"])
        statements = await settled(sent)
        assert statements[1].startswith("BEGIN"), sent
        assert statements[-1].startswith("COMMIT"), sent
        # The count in the statement keeps the quota.
        over = await tenant.call(
            "POST",
            "/v1/configs",
            body={"data": {"type": "configs", "attributes": {"key": "third", "name": "Third"}}},
        )
        assert over.status_code == 409, over.text
        assert "QUOTA_CONFIGS" in over.json()["errors"][0]["detail"]
        listed = await tenant.call("GET", "/v1/configs")
        keys = [item["attributes"]["key"] for item in listed.json()["data"]]
        assert keys == ["first", "second", "child"]


async def test_a_create_in_one_statement_writes_nothing_for_a_refused_caller(
    migrated_database: URL,
) -> None:
    """A key below MEMBER (its user's role, or its own cap), a revoked key, an
    unknown key, a key taken: refused as before, and nothing written or
    counted."""
    async with api_client(migrated_database) as client:
        tenant = await new_tenant(client, "Refused")
        _, viewer = await tenant.user_with_key("VIEWER")
        capped_user, capped = await tenant.user_with_key("MEMBER")
        revoked_user, revoked = await tenant.user_with_key("MEMBER")
        database = await connect(migrated_database)
        try:
            # A key capped below its user's role (as one made by a VIEWER would
            # be), and a key revoked.
            await database.execute(
                "UPDATE api_keys SET max_role = 'VIEWER' WHERE user_id = $1",
                uuid.UUID(capped_user),
            )
            await database.execute(
                "UPDATE api_keys SET revoked_at = now() WHERE user_id = $1",
                uuid.UUID(revoked_user),
            )
        finally:
            await database.close()
        await tenant.create("configs", {"key": "taken", "name": "Taken"})

        def body(key: str) -> dict[str, Any]:
            return {"data": {"type": "configs", "attributes": {"key": key, "name": "N"}}}

        refusals = [
            (viewer, "by-viewer", 403, "acts as VIEWER"),
            (capped, "by-capped", 403, "acts as VIEWER"),
            (revoked, "by-revoked", 401, "not valid or was revoked"),
            (new_key(), "by-unknown", 401, "not valid or was revoked"),
            (None, "taken", 409, "already exists"),
        ]
        for key, config_key, status, detail in refusals:
            answer = await tenant.call("POST", "/v1/configs", key, body(config_key))
            assert answer.status_code == status, (config_key, answer.text)
            assert detail in answer.json()["errors"][0]["detail"], answer.text
        listed = await tenant.call("GET", "/v1/configs")
        assert [item["attributes"]["key"] for item in listed.json()["data"]] == ["taken"]
        database = await connect(migrated_database)
        try:
            held = await database.fetchval(
                "SELECT held FROM config_counts WHERE account_id = $1",
                uuid.UUID(tenant.account_id),
            )
        finally:
            await database.close()
        assert held == 1


async def test_a_create_in_one_statement_is_answered_201_though_its_keys_use_is_not_recorded(
    migrated_database: URL,
) -> None:
    """A key's use is recorded after the write's statement has committed: when
    that record fails (its row locked past the statement timeout), the create
    is answered 201 and logged, never as an error a client would retry."""
    async with api_client(migrated_database, request_statement_timeout=0.5) as client:
        tenant = await new_tenant(client, "Touched")
        user_id, key = await tenant.user_with_key("MEMBER")
        locker = await connect(migrated_database)
        try:
            async with locker.transaction():
                await locker.execute(
                    "SELECT FROM api_keys WHERE user_id = $1 FOR UPDATE", uuid.UUID(user_id)
                )
                body = {"data": {"type": "configs", "attributes": {"key": "kept", "name": "K"}}}
                created = await tenant.call("POST", "/v1/configs", key, body)
        finally:
            await locker.close()
        assert created.status_code == 201, created.text
        listed = await tenant.call("GET", "/v1/configs")
        assert [item["attributes"]["key"] for item in listed.json()["data"]] == ["kept"]


async def test_a_key_over_its_rate_costs_no_database_work(
    migrated_database: URL, sent: list[str]
) -> None:
    """The key's rate is counted before anything is read: a refused page of a
    thousand sends no statement at all."""
    async with api_client(migrated_database, rate_limit_per_key=1) as client:
        tenant = await new_tenant(client, "Rated")
        for _ in range(5):
            if (await tenant.call("GET", "/v1/account")).status_code == 429:
                break
        else:
            pytest.fail("the key was never refused")
        for path in (
            "/api/v1/configs?page[size]=1000&meta[total]=true",
            f"/v1/configs/{uuid.uuid4()}",
            "/api/v1/flags",
            "/v1/users",
        ):
            (await settled(sent)).clear()
            answer = await tenant.call("GET", path)
            assert answer.status_code == 429, (path, answer.text)
            assert answer.headers["retry-after"]
            assert await settled(sent) == [], (path, sent)


async def test_a_write_in_a_transaction_gives_its_statement_connection_back(
    migrated_database: URL,
) -> None:
    """A create under a parent admits its caller in a transaction of
    SQLAlchemy's pool: the statement pool's connection it was lent first
    goes back at once. With one connection in each pool, a read goes on while
    the create waits for its account's quota lock (held here by a session of
    the test's); it would wait for the create if the write kept both. (The
    account may hold both pools' connections at once: ACCOUNT_POOL_SHARE 1.)"""
    async with api_client(
        migrated_database, database_pool_size=2, account_pool_share=1.0
    ) as client:
        tenant = await new_tenant(client, "OneEach")
        parent = (await tenant.create("configs", {"key": "base", "name": "Base"}))["id"]
        holder = await connect(migrated_database)
        try:
            await holder.execute(
                "SELECT pg_advisory_lock($1, hashtext($2))",
                AccountQuotas.lock_space(Kind.CONFIGS),
                tenant.account_id,
            )
            body = {"key": "child", "name": "Child"}
            create = asyncio.ensure_future(tenant.create("configs", body, parent=parent))
            for _ in range(400):
                waiting = await holder.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                )
                if waiting:
                    break
                await asyncio.sleep(0.025)
            assert waiting, "the create never waited for the quota lock"
            read = await asyncio.wait_for(tenant.call("GET", f"/v1/configs/{parent}"), 10)
            assert read.status_code == 200, read.text
            assert not create.done()
        finally:
            await holder.close()  # its lock with it
        made = await asyncio.wait_for(create, 30)
        assert made["attributes"]["key"] == "child"
