"""The API describes itself: /openapi.json documents every answer, every query
parameter a route accepts, its request bodies and who may call it; real
answers conform to it. Also the roles and the named errors it is built on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from jsonschema import Draft202012Validator
from sqlalchemy.engine import URL

from service.accounts.keys import capped_role
from service.api import errors
from service.app import create_app
from service.models import Role
from tests.support.api import JSONAPI, Tenant, api_client, document, new_tenant
from tests.support.configs import settings_for
from tests.support.processes import OPERATOR_TOKEN

LIST_PARAMETERS = {"page[size]", "page[after]", "sort"}
FILTERS = {
    "/v1/users": {"filter[email]", "filter[role]"},
    "/v1/configs": {"filter[key]", "filter[items]"},
}


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return create_app(settings_for(URL.create("postgresql+asyncpg", database="unused")))


@pytest.fixture(scope="module")
def openapi(app: FastAPI) -> dict[str, Any]:
    return app.openapi()


def operations(openapi: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in openapi["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


def resolved(openapi: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = openapi["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def success_schema(openapi: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    responses = openapi["paths"][path][method]["responses"]
    (status,) = [code for code in responses if code.startswith("2")]
    schema: dict[str, Any] = responses[status]["content"][JSONAPI]["schema"]
    return schema


def validator(openapi: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    """The schema with the document's components beside it, so its $refs resolve."""
    return Draft202012Validator({**schema, "components": openapi["components"]})


def test_every_success_with_a_body_has_a_schema(openapi: dict[str, Any]) -> None:
    described = 0
    for path, method, operation in operations(openapi):
        for status, response in operation["responses"].items():
            if not status.startswith("2") or status == "204":
                continue
            for media_type, content in response["content"].items():
                schema = resolved(openapi, content.get("schema", {}))
                assert schema, f"{method.upper()} {path} {status} {media_type}: no schema"
                if path.startswith("/v1"):
                    assert media_type == JSONAPI
                    assert {"data", "jsonapi"} <= set(schema["required"]), (path, method)
                    described += 1
    # 20, and flags (list, get, create, update, evaluate) and usage.
    assert described == 26


def test_no_content_answers_declare_no_body(openapi: dict[str, Any]) -> None:
    deletes = [op for path, method, op in operations(openapi) if method == "delete"]
    # /v1: users, environments, api-keys, configs, flags; /api/v1: configs, environments, flags.
    assert len(deletes) == 8
    for operation in deletes:
        assert "content" not in operation["responses"]["204"]


def test_every_list_declares_its_pagination_and_filters(openapi: dict[str, Any]) -> None:
    lists = {
        path: operation
        for path, method, operation in operations(openapi)
        if method == "get"
        and path.startswith("/v1")
        and resolved(openapi, success_schema(openapi, path, "get"))["properties"]["data"].get(
            "type"
        )
        == "array"
    }
    assert set(lists) == {
        "/v1/users",
        "/v1/environments",
        "/v1/api-keys",
        "/v1/configs",
        "/v1/flags",
        "/v1/usage",
    }
    # Usage rows (day, metric, subject) have no creation time to hold a cursor:
    # their pages are numbered.
    usage = {p["name"] for p in lists.pop("/v1/usage")["parameters"]}
    assert usage == {
        "page[size]",
        "page[number]",
        "filter[since]",
        "filter[metric]",
        "filter[subject]",
    }
    for path, operation in lists.items():
        parameters = {p["name"]: p for p in operation["parameters"]}
        assert set(parameters) == LIST_PARAMETERS | FILTERS.get(path, set()), path
        for parameter in parameters.values():
            assert parameter["in"] == "query"
            assert parameter.get("schema") or parameter.get("content"), parameter
    items = {p["name"]: p for p in lists["/v1/configs"]["parameters"]}["filter[items]"]
    assert items["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/JsonObject"
    }


def test_request_bodies_are_documented_as_json_api(openapi: dict[str, Any]) -> None:
    bodies = [
        (path, method, operation["requestBody"])
        for path, method, operation in operations(openapi)
        if "requestBody" in operation
    ]
    # /v1: 9, and flags' create, update and evaluate; /api/v1: POST and PUT of
    # configs, environments and flags, both discoveries, contexts, metrics, the
    # account's settings.
    assert len(bodies) == 23
    # The SDK's own bodies that are not JSON:API documents.
    not_documents = {
        "/api/v1/configs/bulk": (JSONAPI, ["configs"]),
        "/api/v1/contexts/bulk": (JSONAPI, ["contexts"]),
        "/api/v1/flags/bulk": (JSONAPI, ["flags"]),
        "/api/v1/accounts/current/settings": ("application/json", None),
    }
    for path, method, body in bodies:
        media_type, required = not_documents.get(path, (JSONAPI, ["data"]))
        assert list(body["content"]) == [media_type], f"{method.upper()} {path}"
        schema = resolved(openapi, body["content"][media_type]["schema"])
        assert schema.get("required") == required, f"{method.upper()} {path}"


def test_every_api_operation_names_a_bearer_scheme(openapi: dict[str, Any]) -> None:
    schemes = openapi["components"]["securitySchemes"]
    assert {name: (s["type"], s["scheme"]) for name, s in schemes.items()} == {
        "apiKey": ("http", "bearer"),
        "operatorToken": ("http", "bearer"),
    }
    for path, method, operation in operations(openapi):
        if path.startswith(("/v1", "/api/v1")):
            expected = "operatorToken" if path == "/v1/accounts" else "apiKey"
            assert operation["security"] == [{expected: []}], f"{method.upper()} {path}"


def test_a_member_the_schema_does_not_name_is_refused(openapi: dict[str, Any]) -> None:
    # What makes the conformance checks below (and the fuzzing test) see drift.
    check = validator(openapi, success_schema(openapi, "/v1/service", "get"))
    answer = {
        "data": {
            "type": "service",
            "id": "platform-service",
            "attributes": {"version": "1", "schema_revision": "x"},
        },
        "jsonapi": {"version": "1.1"},
    }
    assert check.is_valid(answer)
    answer["data"]["attributes"]["unlisted"] = 1  # type: ignore[index]
    assert not check.is_valid(answer)


async def conforms(
    openapi: dict[str, Any], response: httpx.Response, path: str, method: str
) -> dict[str, Any]:
    assert response.status_code < 300, response.text
    answer: dict[str, Any] = response.json()
    check = validator(openapi, success_schema(openapi, path, method))
    problems = [f"{list(e.absolute_path)}: {e.message}" for e in check.iter_errors(answer)]
    assert not problems, (method, path, problems, json.dumps(answer)[:2000])
    return answer


async def test_real_answers_conform_to_the_document(
    migrated_database: URL, openapi: dict[str, Any]
) -> None:
    async with api_client(migrated_database) as client:
        operator = {"Authorization": f"Bearer {OPERATOR_TOKEN}", "Content-Type": JSONAPI}
        body = document(
            "accounts", {"name": "Doc", "owner": {"email": "o@doc.test", "role": "OWNER"}}
        )
        created = await client.post("/v1/accounts", headers=operator, json=body)
        await conforms(openapi, created, "/v1/accounts", "post")
        tenant = await new_tenant(client, "Doc")
        await _every_kind_of_answer(tenant, openapi)


async def _every_kind_of_answer(tenant: Tenant, openapi: dict[str, Any]) -> None:
    async def check(method: str, path: str, template: str, body: Any = None) -> dict[str, Any]:
        response = await tenant.call(method.upper(), path, body=body)
        return await conforms(openapi, response, template, method)

    await check("get", "/v1/service", "/v1/service")
    await check("get", "/v1/account", "/v1/account")
    await check("patch", "/v1/account", "/v1/account", document("accounts", {"name": "Renamed"}))
    user = (
        await check(
            "post",
            "/v1/users",
            "/v1/users",
            document("users", {"email": "m@doc.test", "role": "MEMBER"}),
        )
    )["data"]
    await check("get", f"/v1/users/{user['id']}", "/v1/users/{user_id}")
    key = await check("post", "/v1/api-keys", "/v1/api-keys", document("api-keys", {"name": "k"}))
    assert key["data"]["attributes"]["secret"]
    await check("get", f"/v1/api-keys/{key['data']['id']}", "/v1/api-keys/{key_id}")
    root = (
        await check(
            "post",
            "/v1/configs",
            "/v1/configs",
            document("configs", {"key": "root", "name": "Root", "items": {"a": 1}}),
        )
    )["data"]
    child_body = document(
        "configs",
        {"key": "child", "name": "Child", "environments": {"staging": {"a": 2}}},
        parent=root["id"],
    )
    child = (await check("post", "/v1/configs", "/v1/configs", child_body))["data"]
    resolved_answer = await check(
        "get",
        f"/v1/configs/{child['id']}/resolved?environment=staging",
        "/v1/configs/{config_id}/resolved",
    )
    assert resolved_answer["data"]["attributes"]["items"] == {"a": 2}
    flag = (
        await check(
            "post",
            "/v1/flags",
            "/v1/flags",
            document("flags", {"key": "v1-flag", "name": "F", "type": "STRING", "default": "a"}),
        )
    )["data"]
    flag_path = f"/v1/flags/{flag['id']}"
    await check("get", flag_path, "/v1/flags/{flag_id}")
    patch = document("flags", {"default": "b"}, flag["id"])
    await check("patch", flag_path, "/v1/flags/{flag_id}", patch)
    asked = {"data": {"type": "flag-evaluations", "attributes": {"environment": "staging"}}}
    await check("post", f"{flag_path}/evaluate", "/v1/flags/{flag_id}/evaluate", asked)
    await _sdk_flag_answers(check)
    for path in ("/v1/users", "/v1/environments", "/v1/api-keys", "/v1/configs", "/v1/flags"):
        first = await check("get", f"{path}?page[size]=1", path)
        assert first["links"]["next"], path
        await check("get", first["links"]["next"], path)
    await _sdk_dialect_answers(check)
    ids = {
        "user_id": user["id"],
        "key_id": key["data"]["id"],
        "config_id": child["id"],
        "environment_id": tenant.environments["staging"],
        "flag_id": flag["id"],
    }
    await _declared_parameters_are_the_accepted_ones(tenant, openapi, ids)


async def _sdk_dialect_answers(check: Any) -> None:
    """Every /api/v1 answer with a body, as the SDK gets it."""
    typed = {"a": {"value": 1, "type": "NUMBER", "description": None}}
    body = {
        "data": {
            "type": "config",
            "id": "sdk",
            "attributes": {"name": "SDK", "parent": "root", "items": typed},
        }
    }
    await check("post", "/api/v1/configs", "/api/v1/configs", body)
    await check("get", "/api/v1/configs/sdk", "/api/v1/configs/{key}")
    await check("put", "/api/v1/configs/sdk", "/api/v1/configs/{key}", body)
    await check("get", "/api/v1/configs?meta[total]=true", "/api/v1/configs")
    await check("get", "/api/v1/configs?page[size]=1&page[number]=2", "/api/v1/configs")
    bulk = {"configs": [{"id": "found", "items": {"b": {"value": "x", "type": "STRING"}}}]}
    await check("post", "/api/v1/configs/bulk", "/api/v1/configs/bulk", bulk)


async def _sdk_flag_answers(check: Any) -> None:
    """Every /api/v1 flags answer with a body, as the SDK gets it, and the usage it reports."""
    attributes = {"name": "F", "type": "BOOLEAN", "default": False}
    body = {"data": {"type": "flag", "id": "sdk-flag", "attributes": attributes}}
    await check("post", "/api/v1/flags", "/api/v1/flags", body)
    await check("get", "/api/v1/flags/sdk-flag", "/api/v1/flags/{key}")
    await check("put", "/api/v1/flags/sdk-flag", "/api/v1/flags/{key}", body)
    await check("get", "/api/v1/flags?meta[total]=true", "/api/v1/flags")
    declared = {"flags": [{"id": "found-flag", "type": "STRING", "default": "x"}]}
    await check("post", "/api/v1/flags/bulk", "/api/v1/flags/bulk", declared)
    await check("get", "/api/v1/flags/found-flag/sources", "/api/v1/flags/{key}/sources")
    await check("get", "/api/v1/flag_sources", "/api/v1/flag_sources")
    metric = {"name": "flags.evaluations", "value": 2, "dimensions": {"flag": "sdk-flag"}}
    report = {"data": [{"type": "metric", "attributes": metric}]}
    await check("post", "/api/v1/metrics/bulk", "/api/v1/metrics/bulk", report)
    usage = await check("get", "/v1/usage?page[size]=1", "/v1/usage")
    assert usage["data"][0]["attributes"]["total"] == 2


async def _declared_parameters_are_the_accepted_ones(
    tenant: Tenant, openapi: dict[str, Any], ids: dict[str, str]
) -> None:
    """The service names the query parameters a route accepts when refusing an
    unknown one: they must be the ones the document declares."""
    checked = 0
    for path, method, operation in operations(openapi):
        if method != "get" or not path.startswith("/v1"):
            continue
        declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
        response = await tenant.call("GET", path.format(**ids), params={"undeclared": "1"})
        assert response.status_code == 400, (path, response.text)
        detail = response.json()["errors"][0]["detail"]
        listed = detail.split("allowed: ", 1)[1]
        accepted = set() if listed == "none" else set(listed.split(", "))
        assert accepted == declared, (path, detail)
        checked += 1
    assert checked == 14


def test_roles_are_ordered_by_power_not_by_name() -> None:
    ordered = [Role.VIEWER, Role.MEMBER, Role.ADMIN, Role.OWNER]
    assert list(Role) == ordered
    for rank, role in enumerate(ordered):
        for other_rank, other in enumerate(ordered):
            assert role.at_least(other) is (rank >= other_rank), (role, other)
    # As strings they sort otherwise: the enum must not be compared as one.
    assert Role.ADMIN < Role.MEMBER
    assert Role.ADMIN.at_least(Role.MEMBER)


def test_a_key_acts_with_the_lower_of_its_user_role_and_its_cap() -> None:
    assert capped_role("OWNER", "ADMIN") is Role.ADMIN
    assert capped_role("MEMBER", "OWNER") is Role.MEMBER
    assert capped_role("VIEWER", None) is Role.VIEWER
    assert capped_role("OWNER", None) is Role.OWNER
    with pytest.raises(ValueError, match="'owner' is not a valid Role"):
        capped_role("owner", None)


NAMED = {
    errors.BadRequest: 400,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.UnprocessableContent: 422,
    errors.TooManyRequests: 429,
    errors.ServiceUnavailable: 503,
}


@pytest.mark.parametrize(("error", "status"), NAMED.items(), ids=lambda v: str(v))
def test_a_named_error_answers_its_status(error: type[errors.ApiError], status: int) -> None:
    raised = error("why", pointer="/data/attributes/name", headers={"Retry-After": "1"})
    response = errors.api_error_response(raised)
    assert response.status_code == status
    assert response.headers["retry-after"] == "1"
    assert json.loads(bytes(response.body)) == {
        "errors": [
            {
                "status": str(status),
                "title": HTTPStatus(status).phrase,
                "detail": "why",
                "source": {"pointer": "/data/attributes/name"},
            }
        ]
    }


def test_every_documented_client_error_but_the_protocol_ones_has_a_name() -> None:
    named = set(NAMED.values())
    # 405, 406, 413 and 415 are answered before a route runs; 500 is no raise.
    assert set(errors.ERROR_RESPONSES) - named == {405, 406, 413, 415, 500}
    assert {cls.status for cls in errors.ApiError.__subclasses__()} == named


def test_several_problems_in_one_body_are_one_answer() -> None:
    problem = errors.UnprocessableContent.at_pointers([("/a", "is bad"), ("/b/0", "is worse")])
    body = json.loads(bytes(errors.api_error_response(problem).body))
    assert [(e["status"], e["source"]["pointer"], e["detail"]) for e in body["errors"]] == [
        ("422", "/a", "is bad"),
        ("422", "/b/0", "is worse"),
    ]


async def test_a_described_answer_is_sent_as_built_not_validated_again() -> None:
    # The speed of building documents as dicts rests on this: FastAPI applies a
    # route's response_model only to returned values, never to a Response.
    from service.api.environments import EnvironmentDocument
    from service.api.jsonapi import respond

    app = FastAPI()
    built = {"data": "not what the model says", "jsonapi": {"version": "1.1"}}

    @app.get("/described", response_model=EnvironmentDocument)
    async def described() -> Any:
        return respond(built)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/described")
    assert response.status_code == 200
    assert response.json() == built
    assert "EnvironmentDocument" in json.dumps(app.openapi()["paths"]["/described"])
