"""The size limits of what the API stores and answers (docs/security.md, "Limits").

A config's items and overrides, and a user's attributes, are JSON values
bounded in encoded bytes, in members (object keys, at every level) and in
nesting; so a resolved config (at most MAX_CHAIN_DEPTH configs merged) and a
page of a list have a bounded size too.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, StringConstraints, WithJsonSchema

from service.limits import MAX_CHAIN_DEPTH as MAX_CHAIN_DEPTH
from service.limits import MAX_CONFIG_JSON_BYTES as MAX_CONFIG_JSON_BYTES
from service.limits import MAX_JSON_DEPTH as MAX_JSON_DEPTH
from service.limits import MAX_JSON_MEMBERS as MAX_JSON_MEMBERS
from service.limits import MAX_RESOLVED_BYTES as MAX_RESOLVED_BYTES
from service.limits import MAX_USER_ATTRIBUTES_BYTES as MAX_USER_ATTRIBUTES_BYTES
from service.limits import bounded_json as bounded_json
from service.limits import encoded_size as encoded_size

# PostgreSQL stores no NUL character. Said in the OpenAPI document (as an
# ECMA-262 pattern) so that what it calls valid is; service/api/json_body.py
# refuses NUL everywhere in a body whatever the document says.
NO_NUL = "^[^\\u0000]*$"
Text = Annotated[str, StringConstraints(pattern=NO_NUL)]
# A page of a list ends early once its resources hold this many bytes.
MAX_PAGE_BYTES = 1024 * 1024
# The largest position an environment may have (and a list's cursor hold).
MAX_POSITION = 1_000_000


_OBJECT = "#/components/schemas/JsonObject"
# The OpenAPI document's JSON values (service/api/openapi.py adds them to its
# components): any JSON but NUL characters, so that a value it calls valid is
# one PostgreSQL stores. Sizes, members and nesting are bounded by
# service/limits.py.
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
