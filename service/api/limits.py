"""The size limits of what the API stores and answers (docs/security.md, "Limits").

A config's items and overrides, and a user's attributes, are JSON values
bounded in encoded bytes, in members (object keys, at every level) and in
nesting; so a resolved config (at most MAX_CHAIN_DEPTH configs merged) and a
page of a list have a bounded size too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import AfterValidator, StringConstraints, WithJsonSchema

# PostgreSQL stores no NUL character. Said in the OpenAPI document (as an
# ECMA-262 pattern) so that what it calls valid is; service/api/json_body.py
# refuses NUL everywhere in a body whatever the document says.
NO_NUL = "^[^\\u0000]*$"
Text = Annotated[str, StringConstraints(pattern=NO_NUL)]
# The longest parent chain of configs; also bounds the cycle and depth searches.
MAX_CHAIN_DEPTH = 32
# A config's items, and all its overrides together, each at most this many bytes of JSON.
MAX_CONFIG_JSON_BYTES = 32 * 1024
# A user's attributes.
MAX_USER_ATTRIBUTES_BYTES = 16 * 1024
# Object members in one stored JSON value, counted at every level.
MAX_JSON_MEMBERS = 1000
# Levels of nesting inside one stored JSON value ({"a": {"b": 1}} has two).
MAX_JSON_DEPTH = 16
# A page of a list ends early once its resources hold this many bytes.
MAX_PAGE_BYTES = 1024 * 1024
# The largest position an environment may have (and a list's cursor hold).
MAX_POSITION = 1_000_000
# A resolved config is at most the sum of its chain: larger only for configs
# stored before these limits, which are then refused (409), not answered.
MAX_RESOLVED_BYTES = MAX_CHAIN_DEPTH * 2 * MAX_CONFIG_JSON_BYTES


def encoded_size(value: Any) -> int:
    """Bytes of `value` as compact UTF-8 JSON (as PostgreSQL is sent it)."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def _shape(value: Any) -> tuple[int, int]:
    """(members at every level, deepest nesting) of a JSON value."""
    members = depth = 0
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        current, level = pending.pop()
        if isinstance(current, dict):
            members += len(current)
            depth = max(depth, level + 1)
            pending.extend((item, level + 1) for item in current.values())
        elif isinstance(current, list):
            depth = max(depth, level + 1)
            pending.extend((item, level + 1) for item in current)
    return members, depth


def bounded_json(max_bytes: int) -> Callable[[Any], Any]:
    """A pydantic check that a JSON value is within the limits above."""

    def check(value: Any) -> Any:
        members, depth = _shape(value)
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"nests {depth} levels deep; at most {MAX_JSON_DEPTH} are stored")
        if members > MAX_JSON_MEMBERS:
            raise ValueError(f"has {members} object members; at most {MAX_JSON_MEMBERS} are stored")
        if (size := encoded_size(value)) > max_bytes:
            raise ValueError(f"is {size} bytes of JSON; at most {max_bytes} are stored")
        return value

    return check


_OBJECT = "#/components/schemas/JsonObject"
# The OpenAPI document's JSON values (service/api/openapi.py adds them to its
# components): any JSON but NUL characters, so that a value it calls valid is
# one PostgreSQL stores. Sizes, members and nesting are bounded as above.
JSON_SCHEMAS: dict[str, Any] = {
    "JsonValue": {
        "anyOf": [
            {"type": "string", "pattern": NO_NUL},
            {"type": "number"},
            {"type": "boolean"},
            {"type": "null"},
            {"type": "array", "items": {"$ref": "#/components/schemas/JsonValue"}},
            {"$ref": _OBJECT},
        ]
    },
    "JsonObject": {
        "type": "object",
        "propertyNames": {"pattern": NO_NUL},
        "additionalProperties": {"$ref": "#/components/schemas/JsonValue"},
        "maxProperties": MAX_JSON_MEMBERS,
    },
}


def _json_object(max_bytes: int, description: str) -> WithJsonSchema:
    return WithJsonSchema(
        {
            "allOf": [{"$ref": _OBJECT}],
            "description": f"{description} at most {max_bytes} bytes "
            f"of JSON, {MAX_JSON_MEMBERS} members at every level, nested {MAX_JSON_DEPTH} deep",
        }
    )


# Any JSON value PostgreSQL stores (no NUL character anywhere in it).
# (allOf: pydantic resolves a bare $ref it did not make and fails.)
JsonValue = Annotated[Any, WithJsonSchema({"allOf": [{"$ref": "#/components/schemas/JsonValue"}]})]
# An object whose member names hold no NUL character (its values have their own schema).
NAMES_WITHOUT_NUL: dict[str, Any] = {"propertyNames": {"pattern": NO_NUL}}
# A JSON object bounded only by the size of the body (its member names and
# strings without NUL), for objects checked by their own limits in the handler.
JsonObject = Annotated[dict[str, Any], WithJsonSchema({"$ref": _OBJECT})]

ConfigItems = Annotated[
    dict[str, Any],
    AfterValidator(bounded_json(MAX_CONFIG_JSON_BYTES)),
    _json_object(MAX_CONFIG_JSON_BYTES, "The config's items:"),
]
ConfigOverrides = Annotated[
    dict[str, dict[str, Any]],
    AfterValidator(bounded_json(MAX_CONFIG_JSON_BYTES)),
    WithJsonSchema(
        {
            "type": "object",
            "propertyNames": {"pattern": NO_NUL},
            "additionalProperties": {"$ref": _OBJECT},
            "description": "Overrides by environment key; all together at most "
            f"{MAX_CONFIG_JSON_BYTES} bytes of JSON, {MAX_JSON_MEMBERS} members, nested "
            f"{MAX_JSON_DEPTH} deep",
        }
    ),
]
UserAttributes = Annotated[
    dict[str, Any],
    AfterValidator(bounded_json(MAX_USER_ATTRIBUTES_BYTES)),
    _json_object(MAX_USER_ATTRIBUTES_BYTES, "The user's attributes:"),
]
