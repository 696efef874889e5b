"""An API walk driven by a running server's own /openapi.json.

It calls every operation the document lists, reads and writes, in an order
that gives each one what it needs: the operator creates an account (and so
the walk's OWNER key), every collection gets one new object, then every read,
every update and last every delete. Request bodies are JSON:API documents whose
attributes come from the operation's schema: each property gets its default,
its first enumerated value, or a value that fits its type, pattern and length;
updates send again what the create sent. Path parameters take the id of the
object the walk created in the collection above them; a required query
parameter named after a collection (`environment`) takes the key of the object
created there. So the walk follows the routes a release had, not the ones this
code has.

The walk is deterministic: two walks against the same code make the same
requests (each in a new account), so their answers can be compared one to one.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

JSONAPI = "application/vnd.api+json"
ACCOUNTS = "/v1/accounts"
# What no schema says: the first user of an account is its OWNER; an SDK
# config's parent is the key of a config that exists (None: left out); a
# flag's default is any JSON value its type allows (the walk's flags are
# BOOLEAN, the type's first value).
KNOWN_VALUES: dict[tuple[str, str], Any] = {
    (ACCOUNTS, "/owner/role"): "OWNER",
    ("/api/v1/configs", "/parent"): None,
    ("/v1/flags", "/default"): False,
    ("/api/v1/flags", "/default"): False,
    # Every account has a production environment; a flag is evaluated in one.
    ("/v1/flags/{flag_id}/evaluate", "/environment"): "production",
    # A flag without declared values takes any value of its type.
    ("/v1/flags", "/values"): None,
    ("/api/v1/flags", "/values"): None,
}
# Resource types of bodies no schema names, by path: an action's body is not
# its collection's resource.
KNOWN_TYPES = {"/v1/flags/{flag_id}/evaluate": "flag-evaluations"}
_PARAMETER = re.compile(r"\{([^}]+)\}")
_KEY_PREFIX = "psk_"
# How long a walk waits for a create it was answered to become readable.
SETTLE_PATIENCE = 10.0
# How long, in all, a walk asks again requests answered 503 with Retry-After.
UNREADY_PATIENCE = 60.0
_METHOD_ORDER = {"post": 1, "get": 2, "put": 3, "patch": 3, "delete": 4}


@dataclass(frozen=True)
class Call:
    operation: str  # "GET /v1/users/{user_id}"
    url: str
    status: int | None  # None: the walk could not make the request
    detail: str = ""

    @property
    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class Created:
    type: str
    id: str
    attributes: dict[str, Any]


@dataclass
class Walk:
    client: httpx.Client
    document: dict[str, Any]
    operator_token: str
    calls: list[Call] = field(default_factory=list)
    created: dict[str, Created] = field(default_factory=dict)
    tried: list[str] = field(default_factory=list)
    read: dict[str, dict[str, Any]] = field(default_factory=dict)
    key: str | None = None
    counter: int = 0
    unready_deadline: float | None = None

    def run(self) -> list[Call]:
        operations = list(self._operations())
        creates = [op for op in operations if op[0] == "post" and not _PARAMETER.search(op[1])]
        creates.sort(key=lambda op: op[1] != ACCOUNTS)
        for method, path, operation in creates:
            self._create(method, path, operation)
        rest = [op for op in operations if op not in creates]
        rest.sort(key=lambda op: _METHOD_ORDER.get(op[0], 3))
        deletes = [op for op in rest if op[0] == "delete"]
        for method, path, operation in [op for op in rest if op[0] != "delete"]:
            self._call(method, path, operation)
        # Delete the newest objects first: nothing created later depends on them then.
        for method, path, operation in sorted(deletes, key=self._creation_order, reverse=True):
            self._call(method, path, operation)
        return self.calls

    def _operations(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        for path, item in self.document.get("paths", {}).items():
            for method, operation in item.items():
                if method in _METHOD_ORDER and not _streams(operation):
                    yield method, path, operation

    def _creation_order(self, operation: tuple[str, str, dict[str, Any]]) -> int:
        # By the order creates were tried, not by which succeeded: the walk makes
        # the same requests in the same order whatever the server answers.
        collections = _collections(operation[1])
        return max((self.tried.index(c) for c in collections if c in self.tried), default=-1)

    def _create(self, method: str, path: str, operation: dict[str, Any]) -> None:
        self.tried.append(path)
        attributes = self._attributes(operation, path, {})
        data_schema = self._data_schema(operation)
        body: dict[str, Any]
        if data_schema is None:
            # Not a JSON:API document ({"configs": [...]}, say): its own members.
            body = self._object(self._body_schema(operation), {}, path, "")
        elif data_schema.get("type") == "array":
            # A batch of resources (the SDK's telemetry): an empty one.
            body = {"data": []}
        else:
            resource = {"type": self._type(data_schema, path), "attributes": attributes}
            if "id" in data_schema.get("required", []):
                # A client-chosen id (the /api/v1 dialect's keys).
                resource["id"] = self._example(data_schema["properties"]["id"], {}, path, "/id")
            body = {"data": resource}
        operator = path == ACCOUNTS
        response = self._send(method, path, path, body=body, operator=operator)
        if response is None or not 200 <= response.status_code < 300:
            return
        data = _json(response).get("data") or {}
        if isinstance(data, dict) and "id" in data:
            self.created[path] = Created(str(data.get("type")), str(data["id"]), attributes)
        if operator:
            # The secret, not the shorter prefix shown beside it.
            self.key = max(
                _strings_with_prefix(_json(response), _KEY_PREFIX), key=len, default=None
            )
        if isinstance(data, dict):
            self._settle(data.get("links", {}).get("self"))

    def _settle(self, location: Any) -> None:
        """Wait until what was just created can be read (not a recorded call).

        Releases that commit after answering (FastAPI's default dependency
        scope) acknowledge a create before it is visible; the walk tests the
        schema, so it waits for the write instead of racing it."""
        if not isinstance(location, str) or not location.startswith("/"):
            return
        headers = {"Accept": JSONAPI, "Authorization": f"Bearer {self.key}"}
        deadline = time.monotonic() + SETTLE_PATIENCE
        while time.monotonic() < deadline:
            if self.client.get(location, headers=headers).status_code < 300:
                return
            time.sleep(0.05)

    def _call(self, method: str, path: str, operation: dict[str, Any]) -> None:
        url = self._url(path, operation)
        if url is None:
            missing = ", ".join(_collections(path))
            self.calls.append(
                Call(f"{method.upper()} {path}", path, None, f"nothing created at {missing}")
            )
            return
        body: Any = None
        if path in KNOWN_TYPES:
            # An action on the object (evaluate): a body of its own type, no id.
            attributes = self._attributes(operation, path, {})
            body = {"data": {"type": KNOWN_TYPES[path], "attributes": attributes}}
        elif "requestBody" in operation and self._data_schema(operation) is None:
            body = self._object(self._body_schema(operation), {}, path, "")
        elif "requestBody" in operation:
            previous = self.read.get(url.split("?")[0], {})
            created = self._created_for(path)
            sent = created.attributes if created else {}
            data: dict[str, Any] = {
                "type": previous.get("type") or (created.type if created else ""),
                "attributes": self._attributes(operation, path, sent),
            }
            if previous.get("id") or created:
                data["id"] = previous.get("id") or (created.id if created else None)
            body = {"data": data}
        # Routes the release documents as the operator's (its /metrics, say) get the operator token.
        operator = {"operatorToken": []} in operation.get("security", [])
        response = self._send(method, path, url, body=body, operator=operator)
        if response is not None and method == "get" and 200 <= response.status_code < 300:
            found = _json(response).get("data")
            if isinstance(found, dict):
                self.read[url.split("?")[0]] = found

    def _created_for(self, path: str) -> Created | None:
        collections = _collections(path)
        return self.created.get(collections[-1]) if collections else None

    def _url(self, path: str, operation: dict[str, Any]) -> str | None:
        url = path
        for collection, name in zip(_collections(path), _PARAMETER.findall(path), strict=True):
            if collection not in self.created:
                return None
            url = url.replace(f"{{{name}}}", self.created[collection].id)
        query = [
            f"{parameter['name']}={self._query_value(parameter)}"
            for parameter in operation.get("parameters", [])
            if parameter.get("in") == "query" and parameter.get("required")
        ]
        return url + ("?" + "&".join(query) if query else "")

    def _query_value(self, parameter: dict[str, Any]) -> str:
        for path, created in self.created.items():
            if path.rsplit("/", 1)[-1] == parameter["name"] + "s":
                return str(created.attributes.get("key", created.id))
        return str(self._example(parameter.get("schema", {}), {}, "", ""))

    def _attributes(
        self, operation: dict[str, Any], path: str, sent: dict[str, Any]
    ) -> dict[str, Any]:
        data = self._data_schema(operation) or {}
        attributes = self._resolve(data.get("properties", {}).get("attributes", {}))
        value = self._object(attributes, sent, path, "")
        return value if isinstance(value, dict) else {}

    def _body_schema(self, operation: dict[str, Any]) -> dict[str, Any]:
        content: dict[str, Any] = operation.get("requestBody", {}).get("content", {})
        media: dict[str, Any] = next(iter(content.values()), {})
        return self._resolve(media.get("schema", {}))

    def _data_schema(self, operation: dict[str, Any]) -> dict[str, Any] | None:
        """The schema of a JSON:API body's `data`; None for other bodies."""
        data = self._body_schema(operation).get("properties", {}).get("data")
        return None if data is None else self._resolve(data)

    def _type(self, data_schema: dict[str, Any], path: str) -> str:
        """The type the document names, else one known for the path, else the
        collection's name (/v1/users: users)."""
        named = self._resolve(data_schema.get("properties", {}).get("type", {})).get("enum")
        if named:
            return str(named[0])
        return KNOWN_TYPES.get(path, path.rsplit("/", 1)[-1])

    def _object(self, schema: dict[str, Any], sent: dict[str, Any], path: str, pointer: str) -> Any:
        result = {}
        for name, prop in schema.get("properties", {}).items():
            value = self._example(prop, sent, path, f"{pointer}/{name}")
            if value is not None:
                result[name] = value
        return result

    def _example(
        self, schema: dict[str, Any], sent: dict[str, Any], path: str, pointer: str
    ) -> Any:
        schema = self._resolve(schema)
        name = pointer.rsplit("/", 1)[-1]
        for collection in (path, *_collections(path)[-1:]):
            if (collection, pointer) in KNOWN_VALUES:
                return KNOWN_VALUES[(collection, pointer)]
        if pointer.count("/") == 1 and name in sent:
            return sent[name]
        for choice in schema.get("anyOf", []) + schema.get("oneOf", []):
            if self._resolve(choice).get("type") != "null":
                return self._example(choice, sent, path, pointer)
        if schema.get("default") is not None:
            return schema["default"]
        if schema.get("enum"):
            return schema["enum"][0]
        kind = schema.get("type")
        if kind == "object":
            return self._object(schema, {}, path, pointer)
        if kind in ("integer", "number"):
            return schema.get("minimum", 1)
        if kind == "boolean":
            return True
        if kind == "array":
            return []
        if kind == "string":
            return self._string(schema)
        return None

    def _string(self, schema: dict[str, Any]) -> str | None:
        self.counter += 1
        n = self.counter
        low, high = schema.get("minLength", 0), schema.get("maxLength", 10_000)
        pattern = schema.get("pattern")
        for candidate in (f"walk{n}", f"walk{n}@example.com", "#3366cc", "w"):
            if low <= len(candidate) <= high and (not pattern or re.search(pattern, candidate)):
                return candidate
        return None

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            node: Any = self.document
            for part in schema["$ref"].lstrip("#/").split("/"):
                node = node[part]
            schema = node
        return schema

    def _send(
        self, method: str, template: str, url: str, *, body: Any = None, operator: bool = False
    ) -> httpx.Response | None:
        token = self.operator_token if operator else self.key
        headers = {"Content-Type": JSONAPI, "Accept": JSONAPI}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        operation = f"{method.upper()} {template}"
        try:
            response = self._request(method.upper(), url, body, headers)
        except httpx.HTTPError as error:
            self.calls.append(Call(operation, url, None, f"{type(error).__name__}: {error}"))
            return None
        ok = 200 <= response.status_code < 300
        # Only answers that went wrong are kept: a 2xx body may hold a new API key.
        detail = "" if ok else response.text[:500]
        self.calls.append(Call(operation, url, response.status_code, detail))
        return response

    def _request(self, method: str, url: str, body: Any, headers: dict[str, str]) -> httpx.Response:
        """One request; a 503 with Retry-After (a worker not ready yet: each of the
        server's workers becomes ready on its own) is asked again, within one
        UNREADY_PATIENCE for the whole walk. The service writes nothing for a
        request it refuses, so a retry is safe."""
        while True:
            response = self.client.request(method, url, json=body, headers=headers)
            if response.status_code != 503 or "retry-after" not in response.headers:
                return response
            if self.unready_deadline is None:
                self.unready_deadline = time.monotonic() + UNREADY_PATIENCE
            if time.monotonic() > self.unready_deadline:
                return response
            # Retry-After says seconds; poll more often, workers get ready within one.
            time.sleep(0.2)


def _collections(path: str) -> list[str]:
    """The collection above each path parameter: /v1/users/{user_id}/x -> [/v1/users]."""
    segments = path.split("/")
    return ["/".join(segments[:i]) for i, part in enumerate(segments) if _PARAMETER.fullmatch(part)]


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _strings_with_prefix(value: Any, prefix: str) -> Iterator[str]:
    if isinstance(value, str) and value.startswith(prefix):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings_with_prefix(item, prefix)
    elif isinstance(value, list):
        for item in value:
            yield from _strings_with_prefix(item, prefix)


def walk(base_url: str, operator_token: str) -> tuple[list[Call], set[str]]:
    """Walk the server at `base_url`; its calls, and every operation its document lists."""
    with httpx.Client(base_url=base_url, timeout=30.0) as client:
        document = client.get("/openapi.json").raise_for_status().json()
        calls = Walk(client, document, operator_token).run()
    return calls, walked_operations(document)


def walked_operations(document: dict[str, Any]) -> set[str]:
    """Every operation of an OpenAPI document that a walk calls ("GET /v1/users")."""
    return {
        f"{method.upper()} {path}"
        for path, item in document.get("paths", {}).items()
        for method, operation in item.items()
        if method in _METHOD_ORDER and not _streams(operation)
    }


def _streams(operation: dict[str, Any]) -> bool:
    """An event stream (GET /api/v1/events) never ends by itself: it is no
    request and answer to compare, and the walk would wait on it forever."""
    success = operation.get("responses", {}).get("200", {})
    return "text/event-stream" in success.get("content", {})
