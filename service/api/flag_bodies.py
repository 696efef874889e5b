"""A flag's body as both doors (/v1/flags, /api/v1/flags) take it: the
SDK's generated `Flag` model, checked for shape here; the rules across
fields are the core's (service/flags/definitions.py). Not a router: the two
routers share it."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    WithJsonSchema,
)

from service.api.limits import NO_NUL, JsonValue
from service.flags.definitions import MAX_RULES, MAX_VALUES, FlagDefinition, FlagType
from service.flags.store import FlagWrite

# As a config's key; "bulk" is the discovery endpoint's path (/flags/bulk).
KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
RESERVED_KEY = "bulk"
MAX_ENVIRONMENTS = 100


def _not_reserved(key: str) -> str:
    if key == RESERVED_KEY:
        raise ValueError(f"{RESERVED_KEY!r} is reserved (POST /api/v1/flags/bulk is discovery)")
    return key


Key = Annotated[str, StringConstraints(pattern=KEY_PATTERN), AfterValidator(_not_reserved)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL)]
Description = Annotated[str, StringConstraints(max_length=10_000, pattern=NO_NUL)]
EnvironmentKey = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=NO_NUL)]


def _upper(value: object) -> object:
    # The SDK's models: "Accepted case-insensitively".
    return value.upper() if isinstance(value, str) else value


TypeName = Annotated[FlagType, BeforeValidator(_upper)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AllowedValue(_Strict):
    name: Name
    value: JsonValue


# (allOf: pydantic resolves a bare $ref it did not make and fails.)
Logic = Annotated[
    dict[str, Any],
    WithJsonSchema(
        {
            "allOf": [{"$ref": "#/components/schemas/JsonObject"}],
            "description": "JSON Logic of the operators the SDK's evaluator understands "
            "(docs/sdk.md); {} never matches",
        }
    ),
]


class Rule(_Strict):
    logic: Logic
    value: JsonValue
    description: Description | None = None


class EnvironmentSettings(_Strict):
    enabled: StrictBool = True
    # null: the flag's default.
    default: JsonValue = None
    rules: Annotated[list[Rule], Field(max_length=MAX_RULES)] = []


class FlagAttributes(_Strict):
    name: Name
    type: TypeName
    default: JsonValue
    description: Description | None = None
    # null: unconstrained, any value of the type.
    values: Annotated[list[AllowedValue], Field(max_length=MAX_VALUES)] | None = None
    environments: (
        Annotated[dict[EnvironmentKey, EnvironmentSettings], Field(max_length=MAX_ENVIRONMENTS)]
        | None
    ) = None
    # Absent (as in every body the SDK sends) leaves it unchanged.
    managed: StrictBool | None = None

    def write(self) -> FlagWrite:
        definition = FlagDefinition(
            type=self.type,
            default=self.default,
            allowed_values=None
            if self.values is None
            else [value.model_dump() for value in self.values],
            environments={
                key: settings.model_dump() for key, settings in (self.environments or {}).items()
            },
        )
        return FlagWrite(self.name, self.description, definition, self.managed)
