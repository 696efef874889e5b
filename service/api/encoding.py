"""The JSON of every answer: orjson where it can, the standard library where
it cannot, the same document either way.

Measured (docs/benchmarks.md, "Encoding an answer's JSON"): a page of 50 configs
took 253 us of CPU to encode with `json.dumps` and 16 us with orjson; one
config 8.1 us and 0.4 us. orjson refuses what the standard encoder takes:
integers beyond 64 bits (a client may store one in a config's items) and keys
that are not strings; those documents fall back to `json.dumps` with the
options Starlette's JSONResponse uses, so they answer as before. A lone
surrogate fails in both, as it did."""

from __future__ import annotations

import json
from typing import Any

import orjson


def encode(document: Any) -> bytes:
    """Compact JSON in UTF-8, as Starlette's JSONResponse renders it."""
    try:
        return orjson.dumps(document)
    except orjson.JSONEncodeError:
        return json.dumps(
            document, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
        ).encode("utf-8")
