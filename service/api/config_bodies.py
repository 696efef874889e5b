"""The pieces of config documents both dialects' routers parse (/v1's
service/api/configs.py, the SDK's service/api/sdk/configs.py and
discovery.py): keys, names, descriptions and typed items."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, StringConstraints, WithJsonSchema

from service.api.jsonapi import Strict
from service.api.limits import NO_NUL, JsonValue
from service.configs.items import ItemType

KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
# POST /api/v1/configs/bulk registers discovered configs, so "bulk" names no
# config: GET /api/v1/configs/bulk could not reach it (docs/sdk.md).
RESERVED_KEY = "bulk"


def _not_reserved(key: str) -> str:
    if key == RESERVED_KEY:
        raise ValueError(
            f"'{RESERVED_KEY}' is reserved (POST /api/v1/configs/{RESERVED_KEY}); choose another key"
        )
    return key


Key = Annotated[
    str,
    StringConstraints(pattern=KEY_PATTERN),
    AfterValidator(_not_reserved),
    WithJsonSchema({"type": "string", "pattern": KEY_PATTERN, "not": {"const": RESERVED_KEY}}),
]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL)]
Description = Annotated[str, StringConstraints(max_length=10_000, pattern=NO_NUL)]
ItemDescription = Annotated[str, StringConstraints(max_length=1000, pattern=NO_NUL)]


class ItemDefinition(Strict):
    value: JsonValue = None
    type: ItemType
    description: ItemDescription | None = None


def _typed_item_schema(item_type: ItemType, value: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "value": {"anyOf": [value, {"type": "null"}]},
            "type": {"type": "string", "enum": [item_type.value]},
            "description": {
                "anyOf": [
                    {"type": "string", "maxLength": 1000, "pattern": NO_NUL},
                    {"type": "null"},
                ]
            },
        },
        "required": ["type"],
        "additionalProperties": False,
    }


# In a config's body a value matches its type (null matches every type), as the
# document says: one schema per type. (Discovery adapts mismatches instead.)
TypedItemInput = Annotated[
    ItemDefinition,
    WithJsonSchema(
        {
            "oneOf": [
                _typed_item_schema(ItemType.STRING, {"type": "string", "pattern": NO_NUL}),
                _typed_item_schema(ItemType.NUMBER, {"type": "number"}),
                _typed_item_schema(ItemType.BOOLEAN, {"type": "boolean"}),
                _typed_item_schema(
                    ItemType.JSON, {"allOf": [{"$ref": "#/components/schemas/JsonValue"}]}
                ),
            ]
        }
    ),
]
