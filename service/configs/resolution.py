"""How a config is resolved for an environment: the rule of the smplkit SDK
(`smplkit/_resolver.py`), so that the server and every SDK client agree.

Levels apply from the root of the parent chain down to the config itself. At
each level the environment's overrides are merged into that level's items,
then the level is merged into what the levels above resolved. A merge is deep:
where both sides hold a JSON object for the same key, the objects merge key by
key at every depth; anything else (arrays, scalars, null, an object meeting a
non-object) is replaced whole by the later side. So a child's item beats a
parent's override for the same key, and a key absent from a level keeps what
the levels above said.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `override` merged in; neither input is changed."""
    merged = dict(base)
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            merged[key] = deep_merge(current, value)
        else:
            merged[key] = value
    return merged


def resolve(chain_from_root: Sequence[Mapping[Any, Any]], environment: str) -> dict[str, Any]:
    """Each level of the chain holds `items` (raw values by key) and
    `environments` (overrides by environment key)."""
    resolved: dict[str, Any] = {}
    for config in chain_from_root:
        overrides = config["environments"].get(environment)
        level = deep_merge(config["items"], overrides if isinstance(overrides, Mapping) else {})
        resolved = deep_merge(resolved, level)
    return resolved
