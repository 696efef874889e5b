"""Flags through both doors, in-process: the SDK's dialect under /api/v1
(shapes its generated models parse, discovery, sources), /v1's resource and
its evaluation, and what the core refuses (types, allowed values, JSON
Logic, environments, type changes, negative data). The SDK itself drives a
real server in tests/api/test_sdk_contract.py."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from smplkit._generated.flags.models.flag_list_response import FlagListResponse
from smplkit._generated.flags.models.flag_response import FlagResponse
from smplkit._generated.flags.models.flag_source_list_response import FlagSourceListResponse

from tests.support.api import Tenant, new_tenant

RULE = {"logic": {"==": [{"var": "user.plan"}, "pro"]}, "value": True, "description": "pros"}


@pytest.fixture
async def tenant(module_client: httpx.AsyncClient) -> Tenant:
    return await new_tenant(module_client)


def sdk_flag(key: str, **attributes: Any) -> dict[str, Any]:
    """A body as the SDK builds it (`smplkit/flags/helpers.py`)."""
    return {
        "data": {
            "type": "flag",
            "id": key,
            "attributes": {
                "name": key.title(),
                "type": "BOOLEAN",
                "default": False,
                "values": [{"name": "on", "value": True}, {"name": "off", "value": False}],
                "description": None,
                **attributes,
            },
        }
    }


def environments(**settings: Any) -> dict[str, Any]:
    return {"production": {"enabled": True, "default": None, "rules": [RULE], **settings}}


async def test_create_get_list_replace_delete_in_the_sdk_shape(tenant: Tenant) -> None:
    created = await tenant.call(
        "POST", "/api/v1/flags", body=sdk_flag("dark-mode", environments=environments())
    )
    assert created.status_code == 201, created.text
    parsed = FlagResponse.from_dict(created.json())
    assert parsed.data.id == "dark-mode"
    assert created.json()["data"]["attributes"]["environments"]["production"]["rules"] == [RULE]
    assert created.json()["data"]["attributes"]["managed"] is True

    got = await tenant.call("GET", "/api/v1/flags/dark-mode")
    assert got.json() == created.json()
    listed = await tenant.call("GET", "/api/v1/flags?page%5Bnumber%5D=1&page%5Bsize%5D=1000")
    assert [item.id for item in FlagListResponse.from_dict(listed.json()).data] == ["dark-mode"]

    replaced = await tenant.call(
        "PUT", "/api/v1/flags/dark-mode", body=sdk_flag("dark-mode", name="Dark", default=True)
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["data"]["attributes"]["name"] == "Dark"
    assert replaced.json()["data"]["attributes"]["environments"] == {}

    assert (await tenant.call("DELETE", "/api/v1/flags/dark-mode")).status_code == 204
    assert (await tenant.call("GET", "/api/v1/flags/dark-mode")).status_code == 404
    assert (await tenant.call("DELETE", "/api/v1/flags/dark-mode")).status_code == 404


@pytest.mark.parametrize(
    ("attributes", "pointer"),
    [
        ({"default": "yes"}, "/data/attributes/default"),
        ({"default": None}, "/data/attributes/default"),
        ({"type": "STRING", "default": "x", "values": [{"name": "a", "value": 1}]}, None),
        ({"type": "STRING", "default": "c", "values": [{"name": "a", "value": "a"}]}, None),
        ({"values": [{"name": "on", "value": True}]}, "/data/attributes/values"),
        ({"type": "NUMERIC", "default": True, "values": None}, "/data/attributes/default"),
        ({"type": "JSON", "default": "text", "values": None}, "/data/attributes/default"),
        (
            {"environments": environments(default="on")},
            "/data/attributes/environments/production/default",
        ),
        (
            {"environments": environments(rules=[{**RULE, "value": 1}])},
            "/data/attributes/environments/production/rules/0/value",
        ),
    ],
)
async def test_values_match_the_flags_type_and_allowed_values(
    tenant: Tenant, attributes: dict[str, Any], pointer: str | None
) -> None:
    answer = await tenant.call("POST", "/api/v1/flags", body=sdk_flag("bad", **attributes))
    assert answer.status_code == 422, answer.text
    if pointer is not None:
        assert answer.json()["errors"][0]["source"]["pointer"] == pointer
    assert (await tenant.call("GET", "/api/v1/flags/bad")).status_code == 404


def _nested(depth: int) -> dict[str, Any]:
    logic: dict[str, Any] = {"var": "user.plan"}
    for _ in range(depth):
        logic = {"!": [logic]}
    return logic


@pytest.mark.parametrize(
    "logic",
    [
        {"method": [{"var": "user.plan"}, "upper"]},
        {"log": "x"},
        {"count": [1, 2]},
        {"==": [1, 1], "!=": [1, 2]},
        {"and": [{"unknown": []}]},
        "plan == pro",
        [{"==": [1, 1]}],
        _nested(40),
        {"in": ["x", ["a" * 100] * 300]},
        {"or": [{"==": [{"var": "user.plan"}, n]} for n in range(400)]},
        {"some": [{"var": "user.tags"}, {"all": [[1, 2], {"==": [{"var": ""}, 1]}]}]},
        {"map": [[1, 2], {"+": [{"reduce": [[1], {"var": "current"}, 0]}, 1]}]},
        # A reducer that squares its accumulator (or doubles a string) grows
        # exponentially with the array: 15 elements blocked a worker until
        # its supervisor killed it.
        {
            "==": [
                {
                    "reduce": [
                        [0] * 15,
                        {"*": [{"var": "accumulator"}, {"var": "accumulator"}]},
                        1e308,
                    ]
                },
                1,
            ]
        },
        {"reduce": [[0] * 28, {"cat": [{"var": "accumulator"}, {"var": "accumulator"}]}, "x"]},
        # A product grows with its factors: 240 of a context's 4,000-digit
        # string held a worker for seven seconds.
        {"==": [{"*": [{"var": "user.a"}] * 9}, 1]},
        {"==": [{"*": [{"var": "user.a"}, {"*": [{"var": "user.a"}] * 4}] * 2}, 1]},
        {"some": [{"var": "user.tags"}, {"==": [{"*": [{"var": ""}, 2]}, 4]}]},
        {"==": [{"var": "user.a"}, "9" * 65]},
        {"==": [{"var": "user.a"}, " -" + "\u0661" * 70]},  # Arabic-Indic digits
        # The whole data copied: 40 copies fed to an array operation whose
        # body joins 40 more held a worker for 17 s.
        {"==": [{"cat": [{"var": ""}, "x"]}, "x"]},
        {"==": [{"var": []}, 1]},
        {"==": [{"var": [None, 1]}, 1]},
        {"==": [{"var": {"cat": ["us", "er"]}}, 1]},
        {"some": [{"merge": [{"var": "user.tags"}, {"var": "user.tags"}]}, {"var": ""}]},
        {"some": [[{"var": "user"}], {"==": [{"var": ""}, 1]}]},
        {"some": [{"var": ""}, {"==": [{"var": ""}, 1]}]},
        {"==": [{"cat": [{"var": "user.a"}] * 9}, "x"]},
        {"in": ["x", {"merge": [{"var": "user.tags"}] * 5 + [{"cat": ["a"] * 4}]}]},
        # A name is looked up part by part, an error raised and caught for
        # each part tried on a string: 100 rules of long names took 26 s.
        {"some": [{"var": "user.tags"}, {"missing": ["0." * 200 + "0"]}]},
        {"missing": [{"var": "user.s"}]},
        {"missing_some": [1, [{"var": "user.s"}]]},
        {"==": [{"var": "a." * 16 + "b"}, 1]},
        {"==": [{"var": "x" * 257}, 1]},
        {"some": [{"var": "user.tags"}, {"var": {"var": ""}}]},
    ],
)
async def test_rule_logic_is_bounded_json_logic_the_sdk_understands(
    tenant: Tenant, logic: Any
) -> None:
    rules = [{"logic": logic, "value": True, "description": None}]
    body = sdk_flag("gated", environments=environments(rules=rules))
    answer = await tenant.call("POST", "/api/v1/flags", body=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["source"]["pointer"].startswith(
        "/data/attributes/environments/production/rules/0/logic"
    )


async def test_an_environments_rules_are_bounded_together(tenant: Tenant) -> None:
    """Each rule within its own bound, five of them over the environment's."""
    logic = {"or": [{"==": [{"var": "user.plan"}, n]} for n in range(80)]}
    rules = [{"logic": logic, "value": True, "description": None}] * 5
    body = sdk_flag("heavy", environments=environments(rules=rules))
    answer = await tenant.call("POST", "/api/v1/flags", body=body)
    assert answer.status_code == 422, answer.text
    pointer = answer.json()["errors"][0]["source"]["pointer"]
    assert pointer == "/data/attributes/environments/production/rules"
    body = sdk_flag("heavy", environments=environments(rules=rules[:4]))
    assert (await tenant.call("POST", "/api/v1/flags", body=body)).status_code == 201


async def test_an_environments_rules_are_bounded_by_what_one_evaluation_runs(
    tenant: Tenant,
) -> None:
    """A part in an array operation's body runs once per element (up to 100):
    ten such rules of 50 parts fit what one evaluation may run, eleven do not,
    though their parts (550) are far within the environment's 2,000."""
    logic = {"some": [{"var": "user.tags"}, {"or": [{"==": [{"var": ""}, n]} for n in range(9)]}]}
    rules = [{"logic": logic, "value": True, "description": None}] * 11
    body = sdk_flag("busy", environments=environments(rules=rules))
    answer = await tenant.call("POST", "/api/v1/flags", body=body)
    assert answer.status_code == 422, answer.text
    error = answer.json()["errors"][0]
    assert error["source"]["pointer"] == "/data/attributes/environments/production/rules"
    assert "may run 51744 parts" in error["detail"]
    body = sdk_flag("busy", environments=environments(rules=rules[:10]))
    assert (await tenant.call("POST", "/api/v1/flags", body=body)).status_code == 201


async def test_environments_must_exist_and_types_never_change(tenant: Tenant) -> None:
    body = sdk_flag("f", environments={"nowhere": {"enabled": True, "rules": []}})
    answer = await tenant.call("POST", "/api/v1/flags", body=body)
    assert answer.status_code == 404, answer.text
    assert (
        answer.json()["errors"][0]["source"]["pointer"] == "/data/attributes/environments/nowhere"
    )
    assert (await tenant.call("POST", "/api/v1/flags", body=sdk_flag("f"))).status_code == 201
    again = await tenant.call("POST", "/api/v1/flags", body=sdk_flag("f"))
    assert again.status_code == 409
    as_string = sdk_flag("f", type="STRING", default="x", values=None)
    changed = await tenant.call("PUT", "/api/v1/flags/f", body=as_string)
    assert changed.status_code == 409, changed.text
    assert (await tenant.call("GET", "/api/v1/flags/f")).json()["data"]["attributes"]["type"] == (
        "BOOLEAN"
    )


@pytest.mark.parametrize(
    "raw",
    [
        '"name": "a\\u0000b"',
        '"name": "\\ud800"',
        '"description": "\\ud800"',
        '"default": NaN',
        '"default": 1e400',
        '"name": "' + "x" * 201 + '"',
    ],
)
async def test_negative_data_is_refused_and_changes_nothing(tenant: Tenant, raw: str) -> None:
    name = raw.split(": ", 1)[0]
    body = (
        '{"data": {"type": "flag", "id": "neg", "attributes": {"name": "N", "type": "NUMERIC",'
        ' "default": 1, "values": null, ' + raw + "}}}"
    )
    if name in ('"name"', '"default"'):
        body = body.replace(f'{name}: "N", ' if name == '"name"' else f"{name}: 1, ", "", 1)
    answer = await tenant.client.post("/api/v1/flags", headers=tenant.headers(), content=body)
    assert answer.status_code in (400, 422), answer.text
    assert (await tenant.call("GET", "/api/v1/flags/neg")).status_code == 404


@pytest.mark.parametrize("key", ["bulk", "a b", "x" * 129, "ünïcode", "-lead", ""])
async def test_keys_are_checked(tenant: Tenant, key: str) -> None:
    answer = await tenant.call("POST", "/api/v1/flags", body=sdk_flag(key))
    assert answer.status_code == 422, answer.text


async def test_discovery_creates_unmanaged_flags_skips_bad_entries_and_records_sources(
    tenant: Tenant,
) -> None:
    assert (await tenant.call("POST", "/api/v1/flags", body=sdk_flag("kept"))).status_code == 201
    declared = {
        "flags": [
            {"id": "new-flag", "type": "STRING", "default": "blue", "service": "web",
             "environment": "production"},
            {"id": "kept", "type": "boolean", "default": True, "service": "web"},
            {"id": "broken", "type": "NUMERIC", "default": "ten"},
            {"id": "bad key", "type": "BOOLEAN", "default": True},
            {"id": "no-type", "default": True},
        ]
    }  # fmt: skip
    answer = await tenant.call("POST", "/api/v1/flags/bulk", body=declared)
    assert answer.status_code == 200, answer.text
    assert answer.json()["registered"] == 2
    assert [entry["index"] for entry in answer.json()["skipped"]] == [2, 3, 4]
    created = (await tenant.call("GET", "/api/v1/flags/new-flag")).json()["data"]["attributes"]
    assert created["managed"] is False
    assert created["default"] == "blue"
    kept = (await tenant.call("GET", "/api/v1/flags/kept")).json()["data"]["attributes"]
    assert kept["default"] is False
    assert kept["managed"] is True
    assert (await tenant.call("GET", "/api/v1/flags/broken")).status_code == 404

    sources = await tenant.call("GET", "/api/v1/flags/new-flag/sources")
    parsed = FlagSourceListResponse.from_dict(sources.json())
    assert [(s.attributes.service, s.attributes.environment) for s in parsed.data] == [
        ("web", "production")
    ]
    everything = await tenant.call("GET", "/api/v1/flag_sources?filter%5Bservice%5D=web")
    assert sorted(s["attributes"]["flag"] for s in everything.json()["data"]) == [
        "kept",
        "new-flag",
    ]
    assert (await tenant.call("GET", "/api/v1/flags/missing/sources")).status_code == 404


async def test_v1_resource_and_evaluation(tenant: Tenant) -> None:
    rules = [RULE, {"logic": {"in": [{"var": "user.key"}, ["u9"]]}, "value": False}]
    created = await tenant.create(
        "flags",
        {
            "key": "checkout",
            "name": "Checkout",
            "type": "BOOLEAN",
            "default": False,
            "environments": environments(rules=rules, default=False),
        },
    )
    flag_id = created["id"]
    assert created["attributes"]["key"] == "checkout"

    async def evaluated(environment: str | None, **user: Any) -> dict[str, Any]:
        contexts = [{"type": "user", "key": user.pop("key", "u1"), "attributes": user}]
        body = {
            "data": {
                "type": "flag-evaluations",
                "attributes": {"environment": environment, "contexts": contexts},
            }
        }
        answer = await tenant.call("POST", f"/v1/flags/{flag_id}/evaluate", body=body)
        assert answer.status_code == 200, answer.text
        return answer.json()["data"]["attributes"]  # type: ignore[no-any-return]

    assert await evaluated("production", plan="pro") == {
        "value": True,
        "reason": "RULE_MATCH",
        "rule": 0,
    }
    assert await evaluated("production", plan="free") == {
        "value": False,
        "reason": "ENVIRONMENT_DEFAULT",
        "rule": None,
    }
    assert (await evaluated("staging", plan="pro"))["reason"] == "FLAG_DEFAULT"
    assert (await evaluated(None, plan="pro"))["value"] is False

    patched = await tenant.call(
        "PATCH",
        f"/v1/flags/{flag_id}",
        body={"data": {"type": "flags", "id": flag_id, "attributes": {"default": True}}},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["data"]["attributes"]["environments"]["production"]["rules"][0] == RULE
    type_change = await tenant.call(
        "PATCH",
        f"/v1/flags/{flag_id}",
        body={"data": {"type": "flags", "attributes": {"type": "STRING", "default": "x"}}},
    )
    assert type_change.status_code == 409, type_change.text
    listed = await tenant.call("GET", "/v1/flags")
    assert [item["id"] for item in listed.json()["data"]] == [flag_id]
    assert (await tenant.call("DELETE", f"/v1/flags/{flag_id}")).status_code == 204
    assert (await tenant.call("GET", f"/v1/flags/{flag_id}")).status_code == 404


@pytest.mark.parametrize(
    "attributes",
    [
        {"environment": "production", "contexts": [{"type": "user", "key": "\u0000"}]},
        {"contexts": [{"type": "user", "key": "k", "attributes": {"a": "x" * 20_000}}]},
        {"contexts": [{"type": "user", "key": str(n)} for n in range(21)]},
        {"environment": 7},
        {"contexts": [{"type": "user", "key": "k", "attributes": {"n": "\ud800"}}]},
        {"contexts": [{"type": "user", "key": "k", "attributes": {"tags": list(range(101))}}]},
        {"contexts": [{"type": "u", "key": "k", "attributes": {"a": {"b": [[0] * 101]}}}]},
        # A string JSON Logic would read as a number of more than 64 digits.
        {"contexts": [{"type": "user", "key": "k", "attributes": {"a": "9" * 4000}}]},
        {"contexts": [{"type": "user", "key": "k", "attributes": {"a": {"b": ["1_0" * 33]}}}]},
        {"contexts": [{"type": "user", "key": "9" * 256}]},
    ],
)
async def test_evaluation_refuses_bad_contexts(tenant: Tenant, attributes: dict[str, Any]) -> None:
    flag = await tenant.create(
        "flags", {"key": "f", "name": "F", "type": "BOOLEAN", "default": False}
    )
    body = {"data": {"type": "flag-evaluations", "attributes": attributes}}
    # json.dumps escapes a lone surrogate as \ud800, as a client's JSON would.
    answer = await tenant.client.post(
        f"/v1/flags/{flag['id']}/evaluate", headers=tenant.headers(), content=json.dumps(body)
    )
    assert answer.status_code in (400, 422), answer.text


async def test_a_viewer_reads_and_evaluates_but_does_not_write(tenant: Tenant) -> None:
    _, viewer = await tenant.user_with_key("VIEWER")
    refused = await tenant.call("POST", "/api/v1/flags", viewer, sdk_flag("v"))
    assert refused.status_code == 403
    assert (await tenant.call("GET", "/api/v1/flags", viewer)).status_code == 200


def _sdk_environment(key: str) -> dict[str, Any]:
    return {"data": {"type": "environment", "id": key, "attributes": {"name": key.title()}}}


async def test_an_environment_a_flag_targets_is_not_deleted_from_under_it(
    tenant: Tenant,
) -> None:
    """Deleted, it would leave the flag's settings behind: its next write
    refused (404), and a new environment of the same key reviving them."""
    made = await tenant.call("POST", "/api/v1/environments", body=_sdk_environment("canary"))
    assert made.status_code == 201, made.text
    body = sdk_flag("gated", environments={"canary": {"enabled": True, "rules": [RULE]}})
    assert (await tenant.call("POST", "/api/v1/flags", body=body)).status_code == 201
    listed = await tenant.call("GET", "/v1/environments?page[size]=100")
    canary = next(e["id"] for e in listed.json()["data"] if e["attributes"]["key"] == "canary")

    for method, path in (
        ("DELETE", f"/v1/environments/{canary}"),
        ("DELETE", "/api/v1/environments/canary?cascade=false"),
        ("DELETE", "/api/v1/environments/canary"),
    ):
        refused = await tenant.call(method, path)
        assert refused.status_code == 409, refused.text
        assert "1 flag(s) have settings for the environment 'canary'" in refused.text
    # A query boolean is true or false, nothing else.
    guessed = await tenant.call("DELETE", "/api/v1/environments/canary?cascade=yes")
    assert guessed.status_code == 400, guessed.text

    gone = await tenant.call("DELETE", "/api/v1/environments/canary?cascade=true")
    assert gone.status_code == 204, gone.text
    flag = await tenant.call("GET", "/api/v1/flags/gated")
    assert flag.json()["data"]["attributes"]["environments"] == {}
    renamed = await tenant.call("PUT", "/api/v1/flags/gated", body=sdk_flag("gated", name="G"))
    assert renamed.status_code == 200, renamed.text


async def test_rules_and_contexts_within_the_numeric_bounds_are_evaluated(tenant: Tenant) -> None:
    """Eight factors in all, strings of digits up to 64 characters, and any
    other string of any length: stored and evaluated as the SDK would."""
    logic = {
        "and": [
            {"==": [{"*": [{"var": "user.n"}] * 4 + [{"var": "user.big"}] * 4}, 1]},
            {"==": [{"var": "user.id"}, "9" * 64]},
            {"in": ["z", {"var": "user.text"}]},
            {"!": [{"missing": ["user.n", "user.id"]}]},
            {"!": [{"missing_some": [1, ["user.n", "user.none"]]}]},
            # The element of an array operation is `var` of "" in its body.
            {"some": [{"var": "user.tags"}, {"==": [{"var": ""}, "beta"]}]},
            {"all": [[1, 2, [3]], {"!=": [{"var": ""}, 0]}]},
            {
                "==": [
                    {"cat": [{"var": "user.n"}, "-", {"var": ["user.id", "none"]}]},
                    "1-" + "9" * 64,
                ]
            },
        ]
    }
    created = await tenant.create(
        "flags",
        {
            "key": "bounded",
            "name": "Bounded",
            "type": "BOOLEAN",
            "default": False,
            "environments": environments(rules=[{"logic": logic, "value": True}]),
        },
    )
    attributes = {
        "n": "1",
        "big": "1",
        "id": "9" * 64,
        "text": "x" * 10_000 + "z",
        "tags": ["alpha", "beta"],
    }
    body = {
        "data": {
            "type": "flag-evaluations",
            "attributes": {
                "environment": "production",
                "contexts": [{"type": "user", "key": "u", "attributes": attributes}],
            },
        }
    }
    answer = await tenant.call("POST", f"/v1/flags/{created['id']}/evaluate", body=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["attributes"] == {"value": True, "reason": "RULE_MATCH", "rule": 0}
