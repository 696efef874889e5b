"""The sizes of what the service stores, for every door and core alike: a
config's chain, items and overrides, a user's attributes, and any stored JSON
value bounded in encoded bytes, in members (object keys, at every level) and
in nesting (docs/security.md, "Limits"). No HTTP here: the API's schemas
(service/api/limits.py) apply these same checks to request bodies."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

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
