"""Bad input of every kind the database or Python would choke on is a 400 or a
422 naming the parameter or the JSON Pointer, writes nothing, and logs no
traceback: NUL characters, lone surrogates, NaN and Infinity, numbers beyond
a double, Unicode digits, out-of-range times, deep nesting, oversize values."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import URL

from tests.support.api import JSONAPI, new_tenant
from tests.support.postgres import connect
from tests.support.processes import OPERATOR_TOKEN


def body(resource_type: str, attributes: str, extra: str = "") -> bytes:
    """A JSON:API body with `attributes` as raw JSON text (to hold NaN, escapes...)."""
    return f'{{"data": {{"type": "{resource_type}", "attributes": {attributes}{extra}}}}}'.encode()


def cursor(payload: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


NESTED = "[" * 5000 + "]" * 5000
MANY_OVERRIDES = "{" + ",".join(f'"e{n}": {{}}' for n in range(40_000)) + "}"
MANY_ITEMS = "{" + ",".join(f'"k{n}": 1' for n in range(2_000)) + "}"
DEEP_ITEMS = '{"a": ' * 20 + "1" + "}" * 20
LARGE_ITEMS = json.dumps({"big": "x" * 40_000})

# (method, path, body, query, status, where): `where` is the source's pointer
# (starting with "/" or empty) or its parameter.
CASES: dict[str, tuple[str, str, bytes | None, dict[str, str], int, str]] = {
    "NUL in an email": (
        "POST", "/v1/users", body("users", '{"email": "a\\u0000@b.test"}'), {}, 422,
        "/data/attributes/email",
    ),
    "NUL in a JSON value": (
        "POST", "/v1/users", body("users", '{"email": "a@b.test", "attributes": {"x": "\\u0000"}}'),
        {}, 422, "/data/attributes/attributes/x",
    ),
    "NUL in a JSON member name": (
        "POST", "/v1/configs", body("configs", '{"key": "k", "name": "n", "items": {"a\\u0000": 1}}'),
        {}, 422, "/data/attributes/items/a\x00",
    ),
    "NUL in a name": (
        "POST", "/v1/environments", body("environments", '{"key": "qa", "name": "Q\\u0000A"}'),
        {}, 422, "/data/attributes/name",
    ),
    "lone surrogate in a name": (
        "POST", "/v1/environments", body("environments", '{"key": "qa", "name": "\\ud800"}'),
        {}, 422, "/data/attributes/name",
    ),
    "lone surrogate in a member name": (
        "POST", "/v1/configs",
        body("configs", '{"key": "k", "name": "n", "items": {"\\udfff": 1}}'),
        {}, 422, "/data/attributes/items/\ufffd",
    ),
    "lone surrogate in an API key's name": (
        "POST", "/v1/api-keys", body("api-keys", '{"name": "k\\udc80"}'), {}, 422,
        "/data/attributes/name",
    ),
    "NaN in items": (
        "POST", "/v1/configs", body("configs", '{"key": "k", "name": "n", "items": {"x": NaN}}'),
        {}, 422, "/data/attributes/items/x",
    ),
    "Infinity in attributes": (
        "POST", "/v1/users",
        body("users", '{"email": "a@b.test", "attributes": {"x": [Infinity]}}'),
        {}, 422, "/data/attributes/attributes/x/0",
    ),
    "-Infinity in an override": (
        "POST", "/v1/configs",
        body("configs", '{"key": "k", "name": "n", "environments": {"staging": {"x": -Infinity}}}'),
        {}, 422, "/data/attributes/environments/staging/x",
    ),
    "1e400 in items": (
        "POST", "/v1/configs", body("configs", '{"key": "k", "name": "n", "items": {"x": 1e400}}'),
        {}, 422, "/data/attributes/items/x",
    ),
    "an integer beyond a double in items": (
        "POST", "/v1/configs", body("configs", '{"key": "k", "name": "n", "items": {"x": 1' + "0" * 400 + "}}"),
        {}, 422, "/data/attributes/items/x",
    ),
    "a negative integer beyond a double in a filter": (
        "GET", "/v1/configs", None, {"filter[items]": '{"a": -1' + "0" * 310 + "}"}, 400, "filter[items]",
    ),
    "1e-400 (below the smallest double) in items": (
        "POST", "/v1/configs", body("configs", '{"key": "k", "name": "n", "items": {"x": 1e-400}}'),
        {}, 422, "/data/attributes/items/x",
    ),
    "a forged cursor whose id is a number": (
        "GET", "/v1/users", None, {"page[after]": cursor(["2026-11-29T11:55:31+00:00", 5])}, 400, "page[after]",
    ),
    "a forged cursor whose id is a list": (
        "GET", "/v1/api-keys", None, {"page[after]": cursor(["2026-11-29T11:55:31+00:00", ["a"]])},
        400, "page[after]",
    ),
    "a forged cursor whose time is a number": (
        "GET", "/v1/environments", None,
        {"page[after]": cursor([5, "00000000-0000-0000-0000-000000000000"])}, 400, "page[after]",
    ),
    "true as a position": (
        "POST", "/v1/environments",
        body("environments", '{"key": "qa", "name": "QA", "position": true}'),
        {}, 422, "/data/attributes/position",
    ),
    "a position written as a string": (
        "POST", "/v1/environments",
        body("environments", '{"key": "qa", "name": "QA", "position": "3"}'),
        {}, 422, "/data/attributes/position",
    ),
    "1e400 as a position": (
        "POST", "/v1/environments",
        body("environments", '{"key": "qa", "name": "QA", "position": 1e400}'),
        {}, 422, "/data/attributes/position",
    ),
    "a 5,000-digit integer": (
        "POST", "/v1/configs",
        body("configs", '{"key": "k", "name": "n", "items": {"x": ' + "9" * 5000 + "}}"),
        {}, 422, "/data/attributes/items/x",
    ),
    "an email of 300 characters": (
        "POST", "/v1/users", body("users", json.dumps({"email": "a" * 290 + "@b.test"})), {}, 422,
        "/data/attributes/email",
    ),
    "an email that lower-cases past 255 characters": (
        "POST", "/v1/users", body("users", json.dumps({"email": "\u0130" * 200 + "@b.test"})),
        {}, 422, "/data/attributes/email",
    ),
    "an owner's email that lower-cases past 255 characters": (
        "POST", "/v1/accounts",
        body(
            "accounts",
            json.dumps({"name": "A", "owner": {"email": "\u0130" * 200 + "@b.test", "role": "OWNER"}}),
        ),
        {}, 422, "/data/attributes/owner/email",
    ),
    "40,000 override keys": (
        "POST", "/v1/configs",
        body("configs", '{"key": "k", "name": "n", "environments": ' + MANY_OVERRIDES + "}"),
        {}, 422, "/data/attributes/environments",
    ),
    "2,000 item keys": (
        "POST", "/v1/configs", body("configs", '{"key": "k", "name": "n", "items": ' + MANY_ITEMS + "}"),
        {}, 422, "/data/attributes/items",
    ),
    "items nested 20 deep": (
        "POST", "/v1/configs", body("configs", '{"key": "k", "name": "n", "items": ' + DEEP_ITEMS + "}"),
        {}, 422, "/data/attributes/items",
    ),
    "items of 40 KB": (
        "POST", "/v1/configs", body("configs", '{"key": "k", "name": "n", "items": ' + LARGE_ITEMS + "}"),
        {}, 422, "/data/attributes/items",
    ),
    "a body that is not UTF-8": (
        "POST", "/v1/users", b'{"data": {"type": "users", "attributes": {"email": "\xff@b.test"}}}',
        {}, 400, "",
    ),
    "a client-generated id": (
        "POST", "/v1/environments",
        body("environments", '{"key": "qa", "name": "QA"}', ', "id": "mine"'), {}, 403, "/data/id",
    ),
    "page[size] of a superscript two": ("GET", "/v1/users", None, {"page[size]": "\u00b2"}, 400, "page[size]"),
    "page[size] in Arabic-Indic digits": (
        "GET", "/v1/users", None, {"page[size]": "\u0661\u0660"}, 400, "page[size]",
    ),
    "a cursor before year 1 in UTC": (
        "GET", "/v1/configs", None,
        {"page[after]": cursor(["0001-01-01T00:00:00+05:00", "00000000-0000-0000-0000-000000000000"])},
        400, "page[after]",
    ),
    "a cursor after year 9999 in UTC": (
        "GET", "/v1/configs", None,
        {"page[after]": cursor(["9999-12-31T23:59:59-05:00", "00000000-0000-0000-0000-000000000000"])},
        400, "page[after]",
    ),
    # Environments are listed by position: their cursor starts with one.
    "a position cursor whose position is true": (
        "GET", "/v1/environments", None, {"page[after]": cursor([True, "2026-11-29T11:55:31+00:00", "00000000-0000-0000-0000-000000000000"])}, 400, "page[after]",
    ),
    "a position cursor whose position is negative": (
        "GET", "/v1/environments", None, {"page[after]": cursor([-1, "2026-11-29T11:55:31+00:00", "00000000-0000-0000-0000-000000000000"])}, 400, "page[after]",
    ),
    "a position cursor whose position is past the largest": (
        "GET", "/v1/environments", None, {"page[after]": cursor([10**30, "2026-11-29T11:55:31+00:00", "00000000-0000-0000-0000-000000000000"])}, 400, "page[after]",
    ),
    "a position cursor whose position is NaN": (
        "GET", "/v1/environments", None,
        {"page[after]": base64.urlsafe_b64encode(b'[NaN, "2026-11-29T11:55:31+00:00", "00000000-0000-0000-0000-000000000000"]').decode()}, 400, "page[after]",
    ),
    "a position cursor whose position is a fraction": (
        "GET", "/v1/environments", None, {"page[after]": cursor([1.5, "2026-11-29T11:55:31+00:00", "00000000-0000-0000-0000-000000000000"])}, 400, "page[after]",
    ),
    "a position cursor whose position is a string": (
        "GET", "/v1/environments", None, {"page[after]": cursor(["1", "2026-11-29T11:55:31+00:00", "00000000-0000-0000-0000-000000000000"])}, 400, "page[after]",
    ),
    "a sort environments do not have": (
        "GET", "/v1/environments", None, {"sort": "name"}, 400, "sort",
    ),
    "a cursor nested 5,000 deep": (
        "GET", "/v1/configs", None,
        {"page[after]": base64.urlsafe_b64encode(NESTED.encode()).decode()}, 400, "page[after]",
    ),
    "NUL in filter[email]": ("GET", "/v1/users", None, {"filter[email]": "a\x00"}, 400, "filter[email]"),
    "NUL in filter[key]": ("GET", "/v1/configs", None, {"filter[key]": "\x00"}, 400, "filter[key]"),
    "NUL in filter[items]": (
        "GET", "/v1/configs", None, {"filter[items]": '{"a": "\\u0000"}'}, 400, "filter[items]",
    ),
    "NaN in filter[items]": (
        "GET", "/v1/configs", None, {"filter[items]": '{"a": NaN}'}, 400, "filter[items]",
    ),
    "a lone surrogate in filter[items]": (
        "GET", "/v1/configs", None, {"filter[items]": '{"\\ud800": 1}'}, 400, "filter[items]",
    ),
    "an unknown query parameter on a single resource": (
        "GET", "/v1/account", None, {"include": "owner"}, 400, "include",
    ),
    "an unknown query parameter on a collection": (
        "GET", "/v1/users", None, {"filter[password]": "x"}, 400, "filter[password]",
    ),
}  # fmt: skip


# Input whose meaning is not known: another encoding than UTF-8, a name given
# twice (in a query or in one JSON object), bytes that are not UTF-8 in a query.
CONFIG = '{"key": "k", "name": "n"}'
CASES.update(
    {
        "a body in UTF-16": (
            "POST",
            "/v1/configs",
            json.dumps(
                {"data": {"type": "configs", "attributes": {"key": "k", "name": "n"}}}
            ).encode("utf-16"),
            {},
            400,
            "",
        ),
        "a body with a UTF-8 byte-order mark": (
            "POST",
            "/v1/configs",
            b"\xef\xbb\xbf" + body("configs", CONFIG),
            {},
            400,
            "",
        ),
        "a member named twice in one object": (
            "POST",
            "/v1/configs",
            body("configs", '{"key": "k", "key": "k2", "name": "n"}'),
            {},
            400,
            "",
        ),
        "a query value that is not UTF-8": (
            "GET",
            "/v1/configs?filter[key]=%FF",
            None,
            {},
            400,
            "filter[key]",
        ),
        "an encoded surrogate in a query value": (
            "GET",
            "/v1/configs?filter[key]=%ED%A0%80",
            None,
            {},
            400,
            "filter[key]",
        ),
        "an overlong encoding in a query value": (
            "GET",
            "/v1/configs?filter[key]=%C0%80",
            None,
            {},
            400,
            "filter[key]",
        ),
        "a query parameter given twice": (
            "GET",
            "/v1/configs?sort=created_at&sort=-created_at",
            None,
            {},
            400,
            "sort",
        ),
    }
)


@pytest.fixture
def client(module_client: httpx.AsyncClient) -> httpx.AsyncClient:
    """The module's shared app (tests/conftest.py): each test makes its own account."""
    return module_client


async def row_counts(url: URL) -> dict[str, int]:
    connection = await connect(url)
    try:
        return {
            table: await connection.fetchval(f"SELECT count(*) FROM {table}")
            for table in ("accounts", "users", "environments", "api_keys", "configs")
        }
    finally:
        await connection.close()


@pytest.mark.parametrize("name", sorted(CASES))
async def test_bad_input_is_refused_precisely_and_writes_nothing(
    client: httpx.AsyncClient,
    module_database: URL,
    name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    method, path, content, query, status, where = CASES[name]
    tenant = await new_tenant(client)
    before = await row_counts(module_database)
    token = OPERATOR_TOKEN if path == "/v1/accounts" else tenant.owner_key
    headers = {"Authorization": f"Bearer {token}", "Content-Type": JSONAPI}
    response = await client.request(
        method, path, headers=headers, content=content, params=query or None
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == JSONAPI
    sources = [error.get("source", {}) for error in response.json()["errors"]]
    key = "pointer" if where == "" or where.startswith("/") else "parameter"
    assert where in [source.get(key) for source in sources], sources
    assert await row_counts(module_database) == before
    assert "Traceback" not in caplog.text


async def test_a_resolution_with_an_unknown_parameter_or_a_nul_environment_is_refused(
    client: httpx.AsyncClient,
) -> None:
    tenant = await new_tenant(client)
    config = await tenant.create("configs", {"key": "k", "name": "K"})
    path = f"/v1/configs/{config['id']}/resolved"
    for query, parameter in (
        ({"environment": "production", "verbose": "1"}, "verbose"),
        ({"environment": "prod\x00"}, "environment"),
    ):
        refused = await tenant.call("GET", path, params=query)
        assert refused.status_code == 400, refused.text
        assert refused.json()["errors"][0]["source"] == {"parameter": parameter}


async def test_an_anonymous_caller_learns_nothing_from_a_body(client: httpx.AsyncClient) -> None:
    """Authentication comes before the body: the same 401 whatever the body."""
    answers = set()
    for content in (b"{not json", body("accounts", '{"name": NaN}'), body("accounts", "{}")):
        for authorization in ({}, {"Authorization": "Bearer wrong-token-wrong-token-wrong-token"}):
            response = await client.post(
                "/v1/accounts", content=content, headers={"Content-Type": JSONAPI, **authorization}
            )
            answers.add((response.status_code, response.json()["errors"][0]["detail"]))
    assert answers == {(401, "the operator token is required")}
    tenant = await new_tenant(client)
    _, viewer = await tenant.user_with_key("VIEWER")
    refused = await tenant.call("POST", "/v1/users", viewer, content=b"{not json")
    assert refused.status_code == 403


async def test_errors_about_surrogates_are_still_answered(client: httpx.AsyncClient) -> None:
    """An unknown attribute named by a lone surrogate: the pointer cannot hold it
    in UTF-8, so it holds U+FFFD."""
    tenant = await new_tenant(client)
    response = await tenant.call(
        "POST",
        "/v1/environments",
        content=body("environments", '{"key": "qa", "name": "Q", "\\ud800": 1}'),
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["source"]["pointer"] == "/data/attributes/\ufffd"


async def test_json_pointers_escape_slashes_and_tildes(client: httpx.AsyncClient) -> None:
    tenant = await new_tenant(client)
    response = await tenant.call(
        "POST",
        "/v1/configs",
        content=body("configs", '{"key": "k", "name": "n", "items": {"a/b~c": NaN}}'),
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["source"]["pointer"] == "/data/attributes/items/a~1b~0c"


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/v1/configs", "page[size]"),
        ("/v1/environments", "page[size]"),
        ("/v1/usage", "page[size]"),
        ("/v1/usage", "page[number]"),
        ("/api/v1/configs", "page[size]"),
        ("/api/v1/configs", "page[number]"),
        ("/api/v1/environments", "page[number]"),
        ("/api/v1/flags", "page[size]"),
    ],
)
async def test_query_numbers_are_written_in_digits_alone(
    client: httpx.AsyncClient, path: str, parameter: str
) -> None:
    """Not a number pydantic would make of the text: 5_0 is not 50."""
    tenant = await new_tenant(client)
    assert (await tenant.call("GET", path, params={parameter: "5"})).status_code == 200
    for value in ("1.0", "+5", " 5", "5 ", "5_0", "0x5", "5e0", "-1", "", "\u0665"):
        refused = await tenant.call("GET", path, params={parameter: value})
        assert refused.status_code == 400, (value, refused.text)
        (error,) = refused.json()["errors"]
        assert error["source"] == {"parameter": parameter}, (value, error)


@pytest.mark.parametrize("path", ["/api/v1/configs", "/api/v1/environments"])
@pytest.mark.parametrize("parameter", ["meta[total]", "filter[managed]"])
async def test_query_booleans_are_true_or_false_only(
    client: httpx.AsyncClient, path: str, parameter: str
) -> None:
    tenant = await new_tenant(client)
    for value in ("true", "false"):
        assert (await tenant.call("GET", path, params={parameter: value})).status_code == 200
    for value in ("yes", "no", "1", "0", "on", "off", "t", "f", "y", "True", "FALSE", "", "\u0661"):
        refused = await tenant.call("GET", path, params={parameter: value})
        assert refused.status_code == 400, (value, refused.text)
        (error,) = refused.json()["errors"]
        assert error["source"] == {"parameter": parameter}
        assert "true or false" in error["detail"]
