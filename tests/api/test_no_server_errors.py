"""No input produces a 500: a property-based test over every operation of the
API, through a real server (two workers).

For each operation, hypothesis builds requests from a valid one by putting a
hostile value somewhere: a body attribute, deep inside a JSON value, the
resource's type, id or relationships, the raw body, a query parameter, a path
parameter. Hostile values are what Python accepts and PostgreSQL or the code
may not: NUL characters, lone surrogates, NaN and Infinity, numbers beyond a
double, Unicode digits, very long strings, deep nesting, many members,
out-of-range times. Every answer must be below 500, and every 400 and 422
must say where the problem is (`source`). The server must log no error.

Bounded for CI: EXAMPLES per operation, a seed printed and replayable with
FUZZ_SEED.
"""

from __future__ import annotations

import base64
import json
import os
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from sqlalchemy.engine import URL

from tests.support.api import JSONAPI, account_with_key, document
from tests.support.processes import OPERATOR_TOKEN, ServiceProcess
from tests.support.servers import ready_server

# Every test here starts a real process or server.
pytestmark = pytest.mark.processes

SEED = int(os.environ.get("FUZZ_SEED", str(random.SystemRandom().randrange(1 << 30))))
EXAMPLES = 12


@dataclass(frozen=True)
class Raw:
    """JSON text placed as is: NaN, "\\ud800", 1e400 ... that json.dumps would not write."""

    text: str


def to_json(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        members = (f"{to_json(key)}: {to_json(item)}" for key, item in value.items())
        return "{" + ", ".join(members) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(to_json(item) for item in value) + "]"
    return json.dumps(value)


HOSTILE_TEXT = [
    "\x00", "a\x00b", "\u00b2", "\u0661\u0660", "\U0001d7d9", "\u202e", "\ufeff", "\u0130" * 200,
    "x" * 10_000, "9" * 400, "-0", "1e400", "NaN", "' OR 1=1 --", "%00", "\r\nX-Injected: 1",
    "9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+14:00", "", " ", "OWNER", "production",
]  # fmt: skip
HOSTILE_JSON = [
    "NaN", "Infinity", "-Infinity", "1e400", "-1e400", "9" * 5000, "1.5e308", "-0",
    '"\\u0000"', '"a\\u0000b"', '"\\ud800"', '"\\udfff x"', '"\\ud83d"',
    "[" * 3000 + "]" * 3000, '{"a": ' * 40 + "1" + "}" * 40,
    "{" + ", ".join(f'"k{n}": {n}' for n in range(3000)) + "}",
    '"' + "x" * 50_000 + '"', "null", "true", "{}", "[]", '""',
]  # fmt: skip
HOSTILE_KEYS = ['"\\u0000"', '"\\ud800"', '"a/b~c"', '""', '"' + "k" * 5000 + '"']

text = st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=40))
raw_json = st.sampled_from(HOSTILE_JSON).map(Raw)
keys = st.one_of(text, st.sampled_from(HOSTILE_KEYS).map(Raw))
scalars = st.one_of(
    raw_json, text, st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(), st.none(),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=3),
    max_leaves=8,
)
# Short enough for a URL the client builds (the server's head limit is tested elsewhere).
SHORT_JSON = [fragment for fragment in HOSTILE_JSON if len(fragment) < 8000]
query_values = st.one_of(
    text,
    st.sampled_from(["%FF", "%ED%A0%80", "%00", "%C0%80"]).map(lambda encoded: Raw(encoded)),
    st.sampled_from(SHORT_JSON),
    st.binary(max_size=60).map(lambda data: base64.urlsafe_b64encode(data).decode()),
    st.sampled_from(SHORT_JSON).map(
        lambda fragment: base64.urlsafe_b64encode(
            f'[{fragment}, "{uuid.uuid4()}"]'.encode()
        ).decode()
    ),
)
raw_bodies = st.sampled_from(
    [b"", b"null", b"[]", b'{"data": null}', b"\xff\xfe\x00", b"{" * 5000, b'{"data": {"type": '],
)

# A valid body per operation: (type, attributes, relationships to fill in).
TEMPLATES: dict[str, tuple[str, dict[str, Any], tuple[str, ...]]] = {
    "POST /v1/accounts": (
        "accounts", {"name": "A", "owner": {"email": "o@fuzz.test", "role": "OWNER"}}, (),
    ),
    "PATCH /v1/account": ("accounts", {"name": "N"}, ()),
    "POST /v1/users": ("users", {"email": "u@fuzz.test", "role": "VIEWER", "attributes": {"a": 1}}, ()),
    "PATCH /v1/users/{user_id}": ("users", {"attributes": {"a": 1}, "role": "VIEWER"}, ()),
    "POST /v1/environments": (
        "environments", {"key": "e1", "name": "E", "color": "#123456", "position": 1}, (),
    ),
    "PATCH /v1/environments/{environment_id}": ("environments", {"name": "E2", "position": 2}, ()),
    "POST /v1/api-keys": ("api-keys", {"name": "k"}, ("user",)),
    "POST /v1/configs": (
        "configs",
        {"key": "c", "name": "C", "description": "d", "items": {"a": 1},
         "environments": {"staging": {"a": 2}}},
        ("parent",),
    ),
    "PATCH /v1/configs/{config_id}": (
        "configs", {"items": {"a": 1}, "environments": {"production": {"b": [1]}}}, ("parent",),
    ),
    "POST /v1/flags": (
        "flags",
        {"key": "f", "name": "F", "type": "NUMERIC", "default": 1,
         "environments": {"production": {"rules": [{"logic": {">": [{"var": "u.n"}, 1]}, "value": 2}]}}},
        (),
    ),
    "PATCH /v1/flags/{flag_id}": ("flags", {"default": 2, "values": [{"name": "a", "value": 2}]}, ()),
    "POST /v1/flags/{flag_id}/evaluate": (
        "flag-evaluations",
        {"environment": "production", "contexts": [{"type": "u", "key": "k", "attributes": {"n": 2}}]},
        (),
    ),
}  # fmt: skip


def _operations() -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(method, path, parameters) of every /v1 operation in the OpenAPI document."""
    from service.app import create_app
    from settings import Settings

    app = create_app(Settings(database_url="postgresql://u:p@localhost/x"))
    found = []
    for path, operations in app.openapi()["paths"].items():
        if not path.startswith("/v1"):
            continue
        for method, operation in operations.items():
            parameters = [(p["name"], p["in"]) for p in operation.get("parameters", [])]
            found.append((method.upper(), path, parameters))
    return found


OPERATIONS = _operations()


@dataclass
class Tenant:
    key: str
    ids: dict[str, str]


@pytest.fixture(scope="module")
def server(module_database: URL) -> Iterator[ServiceProcess]:
    with ready_server(
        module_database, RATE_LIMIT_PER_KEY="100000", RATE_LIMIT_AUTH_FAILURES="100000"
    ) as process:
        print(f"no-500 property test seed: FUZZ_SEED={SEED}")
        yield process


@pytest.fixture(scope="module")
def client(server: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def tenant(client: httpx.Client) -> Tenant:
    """An account with one object of each kind, for path parameters and relationships."""
    secret, included = account_with_key(client, "Fuzz")
    key = next(i for i in included if i["type"] == "api-keys")
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": JSONAPI}

    def make(resource_type: str, attributes: dict[str, Any]) -> str:
        made = client.post(
            f"/v1/{resource_type}", headers=headers, json=document(resource_type, attributes)
        )
        assert made.status_code == 201, made.text
        return str(made.json()["data"]["id"])

    return Tenant(
        secret,
        {
            "user_id": make("users", {"email": "v@f.test", "role": "VIEWER"}),
            "environment_id": make("environments", {"key": "fuzz", "name": "Fuzz"}),
            "config_id": make("configs", {"key": "fuzz", "name": "Fuzz", "items": {"a": 1}}),
            "flag_id": make(
                "flags", {"key": "fuzz", "name": "Fuzz", "type": "NUMERIC", "default": 1}
            ),
            "key_id": key["id"],
        },
    )


@st.composite
def requests(
    draw: st.DrawFn, method: str, path: str, parameters: list[tuple[str, str]], tenant: Tenant
) -> tuple[str, str, bytes | None]:
    """(method, target, body) of one hostile request for this operation."""
    target = path
    for name, where in parameters:
        if where == "path":
            value = draw(
                st.one_of(
                    st.just(tenant.ids[name]), st.uuids().map(str), text.map(lambda t: t or "x")
                )
            )
            target = target.replace("{" + name + "}", quote(value, safe=""))
    query = draw(_query(parameters))
    if query:
        target += "?" + query
    template = TEMPLATES.get(f"{method} {path}")
    body = draw(_body(template, tenant, path)) if template else None
    return method, target, body


@st.composite
def _query(draw: st.DrawFn, parameters: list[tuple[str, str]]) -> str:
    names = [name for name, where in parameters if where == "query"]
    chosen = draw(st.lists(st.sampled_from([*names, "include", "fields[users]", "x"]), max_size=3))
    parts = []
    for name in chosen:
        value = draw(query_values)
        encoded = value.text if isinstance(value, Raw) else quote(value, safe="")
        parts.append(f"{quote(name, safe='')}={encoded}")
    if "environment" in names and draw(st.booleans()):
        parts.append("environment=production")
    return "&".join(parts)


@st.composite
def _body(
    draw: st.DrawFn,
    template: tuple[str, dict[str, Any], tuple[str, ...]],
    tenant: Tenant,
    path: str,
) -> bytes:
    resource_type, attributes, relationships = template
    data: dict[str, Any] = {"type": resource_type, "attributes": json.loads(json.dumps(attributes))}
    if "{" in path:
        data["id"] = next(tenant.ids[name] for name in tenant.ids if "{" + name + "}" in path)
    related = {
        "user": ("users", tenant.ids["user_id"]),
        "parent": ("configs", tenant.ids["config_id"]),
    }
    if relationships:
        name = relationships[0]
        data["relationships"] = {name: {"data": {"type": related[name][0], "id": related[name][1]}}}
    where = draw(st.sampled_from(["attribute", "nested", "resource", "raw"]))
    if where == "raw":
        return draw(raw_bodies)
    if where == "attribute":
        attribute = draw(st.one_of(st.sampled_from(list(attributes)), keys))
        data["attributes"][attribute] = draw(values)
    elif where == "nested":
        json_valued = [n for n, v in attributes.items() if isinstance(v, dict)] or list(attributes)
        name = draw(st.sampled_from(json_valued))
        container = data["attributes"][name]
        if isinstance(container, dict):
            container[draw(keys)] = draw(values)
        else:
            data["attributes"][name] = draw(values)
    else:
        member = draw(st.sampled_from(["type", "id", "relationships"]))
        data[member] = draw(values)
    return to_json({"data": data}).encode("utf-8", "surrogatepass")


@pytest.mark.parametrize(("method", "path", "parameters"), OPERATIONS, ids=lambda v: str(v)[:40])
def test_no_input_is_answered_with_a_server_error(
    client: httpx.Client,
    server: ServiceProcess,
    tenant: Tenant,
    method: str,
    path: str,
    parameters: list[tuple[str, str]],
) -> None:
    token = OPERATOR_TOKEN if path == "/v1/accounts" else tenant.key
    headers = {"Authorization": f"Bearer {token}", "Content-Type": JSONAPI}

    @seed(SEED)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.data())
    def check(data: st.DataObject) -> None:
        verb, target, body = data.draw(requests(method, path, parameters, tenant))
        response = client.request(verb, target, content=body, headers=headers)
        assert response.status_code < 500, (target, body and body[:300], response.text)
        if response.status_code in (400, 422):
            errors = response.json()["errors"]
            assert all("source" in error for error in errors), (target, response.text)

    check()
    errors = [event for event in server.events() if event["level"] in ("error", "critical")]
    assert errors == [], errors[:3]
    assert "Traceback" not in server.logs()
