"""A 2xx means committed: each request's transaction commits before the status
line is sent, and a commit that fails is answered 5xx.

Through a real server (two workers) and one keep-alive client, as a REST
client works: in-process transports return only after the whole ASGI call and
cannot show the order of "answered" and "committed". Deferred constraint
triggers made for these tests slow every commit down (so an answer sent before
the commit would be seen at once) or make chosen commits fail.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import URL

from tests.support.api import JSONAPI, account_with_key, document
from tests.support.postgres import connect
from tests.support.processes import ServiceProcess
from tests.support.servers import ready_server

# Every test here starts a real process or server.
pytestmark = pytest.mark.processes

TRIES = 40
FAIL_AT_COMMIT = "fail-at-commit"
# Each commit that touches these tables waits this long in a deferred trigger.
SLOW_COMMIT = """
CREATE FUNCTION test_slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(0.02);
    RETURN NULL;
END $$;
CREATE FUNCTION test_fail_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.key LIKE 'fail-at-commit%' THEN
        RAISE EXCEPTION 'refused at commit by a test trigger' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER test_slow_commit AFTER INSERT OR UPDATE ON configs
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_slow_commit();
CREATE CONSTRAINT TRIGGER test_slow_commit AFTER INSERT OR UPDATE ON api_keys
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_slow_commit();
CREATE CONSTRAINT TRIGGER test_slow_commit AFTER INSERT OR UPDATE ON users
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_slow_commit();
CREATE CONSTRAINT TRIGGER test_fail_at_commit AFTER INSERT ON configs
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_fail_at_commit();
"""


@pytest.fixture(scope="module")
async def database(module_database: URL) -> URL:
    connection = await connect(module_database)
    await connection.execute(SLOW_COMMIT)
    await connection.close()
    return module_database


@pytest.fixture(scope="module")
def server(database: URL) -> Iterator[ServiceProcess]:
    # Revoked keys are refused on purpose here, many times from one address.
    with ready_server(database, RATE_LIMIT_AUTH_FAILURES="100000") as process:
        yield process


@pytest.fixture
def client(server: ServiceProcess) -> Iterator[httpx.Client]:
    """One keep-alive connection, as a REST client library keeps it."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    with httpx.Client(
        base_url=f"http://127.0.0.1:{server.port}", limits=limits, timeout=30
    ) as client:
        yield client


class Account:
    def __init__(self, client: httpx.Client):
        self.client = client
        self.key, _ = account_with_key(client, "Commit")

    def call(
        self, method: str, path: str, body: Any = None, key: str | None = None
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key or self.key}", "Content-Type": JSONAPI}
        return self.client.request(method, path, headers=headers, json=body)

    def create(self, resource_type: str, attributes: dict[str, Any], **related: str) -> Any:
        response = self.call(
            "POST", f"/v1/{resource_type}", document(resource_type, attributes, **related)
        )
        assert response.status_code == 201, response.text
        return response.json()["data"]


def test_what_was_created_is_there_on_the_next_request(client: httpx.Client) -> None:
    account = Account(client)
    missing = []
    for n in range(TRIES):
        config = account.create("configs", {"key": f"c-{n}", "name": "C"})
        if account.call("GET", f"/v1/configs/{config['id']}").status_code != 200:
            missing.append(n)
        user = account.create("users", {"email": f"u{n}@commit.test", "role": "VIEWER"})
        key = account.create("api-keys", {"name": "k"}, user=user["id"])["attributes"]["secret"]
        if account.call("GET", "/v1/account", key=key).status_code != 200:
            missing.append(n)
    assert missing == []


def test_a_revoked_key_or_demoted_user_is_refused_on_the_next_request(
    client: httpx.Client,
) -> None:
    account = Account(client)
    still_working = []
    for n in range(TRIES):
        user = account.create("users", {"email": f"r{n}@commit.test", "role": "ADMIN"})
        made = account.create("api-keys", {"name": "k"}, user=user["id"])
        secret = made["attributes"]["secret"]
        assert account.call("DELETE", f"/v1/api-keys/{made['id']}").status_code == 204
        if account.call("GET", "/v1/account", key=secret).status_code != 401:
            still_working.append(("revoked", n))
        other = account.create("api-keys", {"name": "k2"}, user=user["id"])["attributes"]["secret"]
        demoted = account.call(
            "PATCH", f"/v1/users/{user['id']}", document("users", {"role": "VIEWER"}, user["id"])
        )
        assert demoted.status_code == 200, demoted.text
        if account.call("GET", "/v1/api-keys", key=other).status_code != 403:
            still_working.append(("demoted", n))
    assert still_working == []


def test_a_commit_that_fails_is_never_answered_2xx(
    client: httpx.Client, server: ServiceProcess
) -> None:
    """A create under a parent is a transaction: its COMMIT fails."""
    account = Account(client)
    parent = account.create("configs", {"key": f"parent-{uuid.uuid4().hex[:8]}", "name": "P"})
    answers = []
    for _ in range(TRIES // 2):
        key = f"{FAIL_AT_COMMIT}-{uuid.uuid4().hex[:8]}"
        body = document("configs", {"key": key, "name": "F"}, parent=parent["id"])
        refused = account.call("POST", "/v1/configs", body)
        answers.append(refused.status_code)
        assert refused.headers["content-type"] == JSONAPI
        assert refused.json()["errors"][0]["status"] == str(refused.status_code)
        listed = account.call("GET", "/v1/configs", None).json()["data"]
        assert key not in [item["attributes"]["key"] for item in listed]
        # The connection serves on after the failure.
        assert account.call("GET", "/v1/account").status_code == 200
    assert set(answers) == {500}, answers
    assert "response already started" not in server.logs()
    # Each failure logged once (not again by the server), with its cause.
    errors = [event for event in server.events() if event["level"] == "error"]
    assert len(errors) == len(answers), errors
    assert all("refused at commit by a test trigger" in str(e["exception"]) for e in errors)


def test_a_create_in_one_statement_that_fails_at_its_end_is_never_answered_2xx(
    client: httpx.Client,
) -> None:
    """A create at the root is one statement that commits on its own: the
    deferred trigger fails the statement itself, which is answered as a
    violation in an insert is (409), and nothing is written."""
    account = Account(client)
    for _ in range(TRIES // 2):
        key = f"{FAIL_AT_COMMIT}-{uuid.uuid4().hex[:8]}"
        refused = account.call(
            "POST", "/v1/configs", document("configs", {"key": key, "name": "F"})
        )
        assert refused.status_code == 409, refused.text
        assert refused.headers["content-type"] == JSONAPI
        listed = account.call("GET", "/v1/configs", None).json()["data"]
        assert key not in [item["attributes"]["key"] for item in listed]
        assert account.call("GET", "/v1/account").status_code == 200


def test_concurrent_deletes_of_one_config_answer_204_once(
    client: httpx.Client, server: ServiceProcess
) -> None:
    """Eight deletes of one config at once, by id (/v1) and by key (the SDK's
    dialect), each on its own connection: one is answered 204 (and announces
    the delete), the others 404, as if each had come after it."""
    account = Account(client)
    headers = {"Authorization": f"Bearer {account.key}", "Content-Type": JSONAPI}
    for _ in range(5):
        config = account.create("configs", {"key": f"gone-{uuid.uuid4().hex[:8]}", "name": "G"})
        paths = [f"/v1/configs/{config['id']}", f"/api/v1/configs/{config['attributes']['key']}"]

        def delete(n: int, paths: list[str] = paths) -> int:
            with httpx.Client(base_url=client.base_url, headers=headers, timeout=30) as own:
                return own.delete(paths[n % 2]).status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = sorted(pool.map(delete, range(8)))
        assert statuses == [204] + [404] * 7, statuses
