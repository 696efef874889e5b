"""Typed config items: STRING, NUMBER, BOOLEAN or JSON, as the smplkit SDK
declares them (docs/sdk.md).

The raw values stay in `configs.items` (what /v1 shows and filters on); the
type and description of each item are kept beside them in
`configs.item_definitions`. An item the definitions do not name (written by the
release before revision 0012) has the type its value shows, by the rule that
revision's backfill used. A value matches its type, null matching any type (a
typed but unset item); a type never changes once set, and the same key has
the same type on every config of a parent chain.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

from service.limits import MAX_CONFIG_JSON_BYTES, bounded_json, encoded_size
from service.problems import Conflicting, Invalid, json_pointer


class ItemType(StrEnum):
    STRING = "STRING"
    NUMBER = "NUMBER"
    BOOLEAN = "BOOLEAN"
    JSON = "JSON"


def inferred_type(value: Any) -> ItemType:
    """The type a value shows (revision 0012's backfill rule)."""
    if isinstance(value, bool):
        return ItemType.BOOLEAN
    if isinstance(value, int | float):
        return ItemType.NUMBER
    if isinstance(value, str):
        return ItemType.STRING
    return ItemType.JSON


def matches(item_type: ItemType, value: Any) -> bool:
    """Whether `value` is a value of `item_type` (null is, for every type)."""
    return value is None or item_type is ItemType.JSON or inferred_type(value) is item_type


def stored_types(
    items: Mapping[str, Any], definitions: Mapping[str, Any] | None
) -> dict[str, ItemType]:
    """Each item's type: its definition's, else the one its value shows (also
    when the value no longer matches its definition: the release before 0012
    may have written it during a rollout)."""
    known = definitions or {}
    return {key: _type_of(_defined_type(known.get(key)), value) for key, value in items.items()}


def _type_of(defined: ItemType | None, value: Any) -> ItemType:
    return defined if defined is not None and matches(defined, value) else inferred_type(value)


def types_of(definitions: Mapping[str, Any]) -> dict[str, ItemType]:
    """The types of definitions this module made."""
    return {key: ItemType(definition["type"]) for key, definition in definitions.items()}


def _defined_type(definition: Any) -> ItemType | None:
    if isinstance(definition, Mapping) and definition.get("type") in ItemType.__members__:
        return ItemType(definition["type"])
    return None


def typed_items(
    items: Mapping[str, Any], definitions: Mapping[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """Items as the SDK reads them: `{key: {"value", "type", "description"}}`."""
    known = definitions or {}
    types = stored_types(items, known)
    return {
        key: {"value": value, "type": types[key], "description": _description(known.get(key))}
        for key, value in items.items()
    }


def _description(definition: Any) -> str | None:
    if isinstance(definition, Mapping) and isinstance(definition.get("description"), str):
        return str(definition["description"])
    return None


def definitions_of(
    types: Mapping[str, ItemType], descriptions: Mapping[str, str | None]
) -> dict[str, Any]:
    """What `configs.item_definitions` stores for these items."""
    return {
        key: {"type": str(item_type), "description": descriptions.get(key)}
        for key, item_type in types.items()
    }


def inferred_definitions(
    items: Mapping[str, Any],
    previous_items: Mapping[str, Any],
    previous_definitions: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Definitions for items written through /v1, which sends raw values only:
    an item that existed keeps its type and description (its new value must
    match the type: 409 otherwise); a new item gets the type its value shows."""
    before = stored_types(previous_items, previous_definitions)
    known = previous_definitions or {}
    types: dict[str, ItemType] = {}
    for key, value in items.items():
        if key in before and not matches(before[key], value):
            raise Conflicting(
                f"item {key!r} is a {before[key]}; a type never changes once set, so its value "
                f"must be a {before[key]} (or null)",
                json_pointer(("data", "attributes", "items", key)),
            )
        types[key] = before.get(key) or inferred_type(value)
    return definitions_of(types, {key: _description(known.get(key)) for key in types})


def refuse_mismatches(types: Mapping[str, ItemType], items: Mapping[str, Any], at: str) -> None:
    """422 for the first value that does not match its declared type."""
    for key, item_type in types.items():
        if not matches(item_type, items.get(key)):
            raise Invalid(
                f"item {key!r} is declared {item_type}, but its value is a "
                f"{inferred_type(items[key])}",
                at + json_pointer((key, "value")),
            )


def refuse_type_changes(new: Mapping[str, ItemType], old: Mapping[str, ItemType], at: str) -> None:
    """409 for an item whose type differs from the one it already has."""
    for key, item_type in new.items():
        if key in old and old[key] is not item_type:
            raise Conflicting(
                f"item {key!r} is a {old[key]}; a type never changes once set",
                at + json_pointer((key, "type")),
            )


def refuse_chain_disagreements(
    new: Mapping[str, ItemType], relatives: Iterable[Mapping[Any, Any]], at: str
) -> None:
    """409 when an ancestor or descendant (rows of `key`, `items`,
    `item_definitions`) has one of these items with another type."""
    for relative in relatives:
        theirs = stored_types(relative["items"], relative["item_definitions"])
        for key, item_type in new.items():
            if key in theirs and theirs[key] is not item_type:
                raise Conflicting(
                    f"item {key!r} is a {theirs[key]} on config {relative['key']!r} of the same "
                    f"parent chain; a key has one type on every config of a chain",
                    at + json_pointer((key, "type")),
                )


def refuse_nonconforming_overrides(
    overrides: Mapping[str, Mapping[str, Any]], chain_types: Mapping[str, ItemType], at: str
) -> None:
    """422 for an override of an item declared nowhere in the chain, or whose
    value does not match the item's type."""
    for environment, values in overrides.items():
        for key in values:
            if key not in chain_types:
                raise Invalid(
                    f"no item {key!r} is declared on the config or its ancestors",
                    at + json_pointer((environment, key)),
                )
    refuse_mistyped_overrides(overrides, chain_types, at)


def refuse_mistyped_overrides(
    overrides: Mapping[str, Mapping[str, Any]], chain_types: Mapping[str, ItemType], at: str
) -> None:
    """422 for an override of a declared item whose value does not match the
    item's type (overrides of undeclared items are /v1's to allow)."""
    for environment, values in overrides.items():
        for key, value in values.items():
            if key in chain_types and not matches(chain_types[key], value):
                raise Invalid(
                    f"item {key!r} is a {chain_types[key]}; the override is a "
                    f"{inferred_type(value)}",
                    at + json_pointer((environment, key)),
                )


def oversized_items(
    values: Mapping[str, Any], descriptions: Mapping[str, str | None]
) -> str | None:
    """What is over the limits in typed items, if anything: their values (as
    /v1's items) and, apart, their descriptions, each at most
    MAX_CONFIG_JSON_BYTES of JSON."""
    try:
        bounded_json(MAX_CONFIG_JSON_BYTES)(dict(values))
    except ValueError as error:
        return f"the items' values {error}"
    described = {key: description for key, description in descriptions.items() if description}
    if (size := encoded_size(described)) > MAX_CONFIG_JSON_BYTES:
        return (
            f"the items' descriptions are {size} bytes of JSON; at most "
            f"{MAX_CONFIG_JSON_BYTES} are stored"
        )
    return None
