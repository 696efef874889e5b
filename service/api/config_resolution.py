"""How a config is resolved for an environment.

Levels apply from the root of the parent chain down to the config itself; at
each level its items, then its overrides for the environment, replace values
key by key (a shallow merge). So a child's value wins over anything its
parents say, and within one config the environment's override wins.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def resolve(chain_from_root: Sequence[Mapping[Any, Any]], environment: str) -> dict[str, Any]:
    resolved: dict[str, Any] = {}
    for config in chain_from_root:
        resolved.update(config["items"])
        resolved.update(config["environments"].get(environment, {}))
    return resolved
