"""What every answer carries and who may see what: operator-only details and
metrics, headers against caching and sniffing, no redirects built from the
client's Host, JSON:API content negotiation and linkage, rate limits, and log
lines that cannot be forged."""

from __future__ import annotations

import logging
import uuid

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from service.observability.logs import TextFormatter, safe_traceback
from tests.support.api import JSONAPI, api_app, api_client, client_of, document, new_tenant
from tests.support.postgres import service_url
from tests.support.processes import OPERATOR


@pytest.fixture
def client(module_client: httpx.AsyncClient) -> httpx.AsyncClient:
    """The module's shared app (tests/conftest.py): each test makes its own account."""
    return module_client


async def test_readiness_details_and_metrics_are_the_operators(
    client: httpx.AsyncClient, module_database: URL
) -> None:
    public = await client.get("/readyz")
    assert public.status_code == 200
    assert public.json() == {"status": "ready"}
    detailed = await client.get("/readyz", headers=OPERATOR)
    assert detailed.json()["phase"] == "ready"
    assert (await client.get("/metrics")).status_code == 401
    wrong = await client.get("/metrics", headers={"Authorization": "Bearer " + "x" * 40})
    assert wrong.status_code == 401
    assert wrong.json()["errors"][0]["status"] == "401"
    metrics = await client.get("/metrics", headers=OPERATOR)
    assert metrics.status_code == 200
    assert "migration_phase" in metrics.text
    async with api_client(module_database, operator_token=None) as without_token:
        assert (await without_token.get("/metrics", headers=OPERATOR)).status_code == 403
        assert (await without_token.get("/readyz", headers=OPERATOR)).json() == {"status": "ready"}


async def test_every_answer_forbids_caching_and_sniffing(client: httpx.AsyncClient) -> None:
    tenant = await new_tenant(client)
    for response in (
        await tenant.call("GET", "/v1/account"),
        await tenant.call("GET", "/v1/users"),
        await tenant.call("GET", "/v1/nothing"),
        await client.get("/v1/users"),
        await client.get("/livez"),
    ):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"


async def test_a_trailing_slash_is_not_redirected_by_the_host_header(
    client: httpx.AsyncClient,
) -> None:
    tenant = await new_tenant(client)
    response = await client.get(
        "/v1/users/",
        headers={"Authorization": f"Bearer {tenant.owner_key}", "Host": "evil.example"},
    )
    assert response.status_code == 404
    assert "location" not in response.headers


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        (JSONAPI, 201),
        (f'{JSONAPI}; profile="https://example.test/profile"', 201),
        (f'{JSONAPI}; ext="https://jsonapi.org/ext/atomic"', 415),
        (f"{JSONAPI}; charset=utf-8", 415),
        ("text/plain", 415),
    ],
)
async def test_content_type_parameters_follow_json_api(
    client: httpx.AsyncClient, content_type: str, status: int
) -> None:
    tenant = await new_tenant(client)
    response = await client.post(
        "/v1/environments",
        headers={"Authorization": f"Bearer {tenant.owner_key}", "Content-Type": content_type},
        json=document("environments", {"key": "qa", "name": "QA"}),
    )
    assert response.status_code == status, response.text


@pytest.mark.parametrize(
    ("accept", "status"),
    [
        (JSONAPI, 200),
        ("*/*", 200),
        (f"{JSONAPI}; q=0.9", 200),
        (f'{JSONAPI}; profile="https://example.test/p"', 200),
        (f'{JSONAPI}; ext="https://jsonapi.org/ext/atomic"', 406),
        (f"{JSONAPI}; version=2, {JSONAPI}; charset=utf-8", 406),
        (f"{JSONAPI}; version=2, {JSONAPI}", 200),
        (f"{JSONAPI}; version=2, application/json", 406),
    ],
)
async def test_accept_follows_json_api(client: httpx.AsyncClient, accept: str, status: int) -> None:
    tenant = await new_tenant(client)
    response = await client.get(
        "/v1/account", headers={"Authorization": f"Bearer {tenant.owner_key}", "Accept": accept}
    )
    assert response.status_code == status, response.text


async def test_the_account_creation_document_links_everything_it_includes(
    client: httpx.AsyncClient,
) -> None:
    created = await client.post(
        "/v1/accounts",
        headers={**OPERATOR, "Content-Type": JSONAPI},
        json=document("accounts", {"name": "A", "owner": {"email": "o@a.test", "role": "OWNER"}}),
    )
    assert created.status_code == 201
    body = created.json()
    linked = set()
    for relationship in body["data"]["relationships"].values():
        data = relationship["data"]
        for identifier in data if isinstance(data, list) else [data]:
            linked.add((identifier["type"], identifier["id"]))
    assert {(item["type"], item["id"]) for item in body["included"]} == linked


async def test_a_key_over_its_rate_is_answered_429(module_database: URL) -> None:
    async with api_client(module_database, rate_limit_per_key=2) as client:
        tenant = await new_tenant(client)
        _, key = await tenant.user_with_key("VIEWER")
        statuses = [(await tenant.call("GET", "/v1/configs", key)).status_code for _ in range(10)]
        assert statuses[:4] == [200] * 4  # a burst of twice the rate
        assert 429 in statuses
        limited = await tenant.call("GET", "/v1/configs", key)
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.json()["errors"][0]["status"] == "429"
        # Another key has its own budget.
        assert (await tenant.call("GET", "/v1/account")).status_code == 200


@pytest.mark.parametrize("per_key", [100.0, 0.0], ids=["a per-key limit", "no per-key limit"])
async def test_wrong_credentials_are_answered_429_after_a_few_and_right_ones_served(
    module_database: URL, per_key: float
) -> None:
    # RATE_LIMIT_PER_KEY=0 (no per-key limit) must not make every valid key an
    # unknown one, locked out with the address that failed.
    async with api_client(
        module_database, rate_limit_auth_failures=5, rate_limit_per_key=per_key
    ) as client:
        tenant = await new_tenant(client)
        assert (await tenant.call("GET", "/v1/account")).status_code == 200
        wrong = {"Authorization": "Bearer " + "w" * 40, "Content-Type": JSONAPI}
        body = document("accounts", {"name": "A", "owner": {"email": "o@a.test", "role": "OWNER"}})
        statuses = [
            (await client.post("/v1/accounts", headers=wrong, json=body)).status_code
            for _ in range(8)
        ]
        assert statuses == [401] * 5 + [429] * 3
        # The right token is served all the same: only failures are refused ...
        created = await client.post(
            "/v1/accounts", headers={**OPERATOR, "Content-Type": JSONAPI}, json=body
        )
        assert created.status_code == 201
        other = next(item for item in created.json()["included"] if item["type"] == "api-keys")
        other_key = other["attributes"]["secret"]
        assert (await tenant.call("GET", "/v1/account", other_key)).status_code == 200
        # ... and the failures go on being refused, whatever the credential's shape.
        unknown_key = await client.get(
            "/v1/account", headers={"Authorization": "Bearer psk_" + "z" * 43}
        )
        assert unknown_key.status_code == 429
        assert unknown_key.headers["retry-after"]
        assert (await client.get("/v1/account")).status_code == 429
        assert (await tenant.call("GET", "/v1/account")).status_code == 200


@pytest.mark.parametrize(
    ("first", "second", "shared"),
    [
        ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9", True),
        ("2001:db8:1:2::1", "2001:db8:1:3::1", False),
        ("::ffff:192.0.2.1", "192.0.2.1", True),
        ("192.0.2.1", "192.0.2.2", False),
    ],
)
async def test_failures_count_per_ipv4_address_and_per_ipv6_64(
    migrated_database: URL, first: str, second: str, shared: bool
) -> None:
    """A host holds a whole IPv6 /64: counted per address, it could make each
    failure count against a new one."""
    wrong = {"Authorization": "Bearer psk_" + "w" * 43}
    async with api_app(migrated_database, rate_limit_auth_failures=2) as app:
        async with client_of(app, (first, 1)) as client:
            statuses = [(await client.get("/v1/account", headers=wrong)).status_code for _ in "abc"]
        async with client_of(app, (second, 1)) as client:
            status = (await client.get("/v1/account", headers=wrong)).status_code
    assert statuses == [401, 401, 429]
    assert status == (429 if shared else 401)


def test_text_logs_escape_control_characters() -> None:
    formatter = TextFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord(
        "service.requests", logging.INFO, __file__, 1, "%s %s", ("GET", "/a\nINFO forged"), None
    )
    line = formatter.format(record)
    assert "\n" not in line
    assert line == "INFO GET /a\\nINFO forged"


@pytest.mark.parametrize(
    ("character", "shown"),
    [
        ("\x85", "\\x85"),  # NEL: a new line to some readers
        ("\x9b", "\\x9b"),  # CSI: a terminal's escape sequence
        ("\u2028", "\\u2028"),  # line separator
        ("\u2029", "\\u2029"),  # paragraph separator
        ("\u202e", "\\u202e"),  # right-to-left override: the line shown reversed
        ("\u2066", "\\u2066"),  # left-to-right isolate
    ],
)
def test_text_logs_escape_every_character_that_could_forge_or_hide_a_line(
    character: str, shown: str
) -> None:
    formatter = TextFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord(
        "service.requests", logging.INFO, __file__, 1, "%s %s", ("GET", f"/a{character}b"), None
    )
    assert formatter.format(record) == f"INFO GET /a{shown}b"
    assert formatter.format(record).isascii()


def test_text_logs_end_with_the_request_id_when_there_is_one() -> None:
    formatter = TextFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord(
        "service.requests", logging.INFO, __file__, 1, "%s %s", ("GET", "/v1/configs"), None
    )
    assert formatter.format(record) == "INFO GET /v1/configs"
    record.request_id = "trace-abc.123"
    assert formatter.format(record) == "INFO GET /v1/configs request_id=trace-abc.123"


async def test_tracebacks_hold_no_statement_arguments(module_database: URL) -> None:
    """asyncpg names the argument it could not encode, value included, even
    with hide_parameters; the logged traceback does not."""
    secret = uuid.uuid4().hex  # not in this file's source, which tracebacks quote
    engine = create_async_engine(service_url(module_database), hide_parameters=True)
    try:
        async with engine.connect() as connection:
            with pytest.raises(DBAPIError) as raised:
                await connection.execute(text("SELECT CAST(:v AS text)"), {"v": secret + "\ud800"})
    finally:
        await engine.dispose()
    assert secret in str(raised.value.orig)  # what would leak
    trace = safe_traceback(raised.value)
    assert "invalid input for query argument $1" in trace
    assert secret not in trace
