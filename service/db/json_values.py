"""json and jsonb values read from the database, as Python values.

orjson decodes them several times faster than the standard library (the
three jsonb columns of a page of 50 configs took about a fifth of its CPU
with `json.loads`: docs/benchmarks/api.notes.md), but not always to the same
value: it reads an integer beyond 64 bits as a float, and refuses a number
beyond a double, where `json.loads` keeps the integer and reads infinity.
A client may have stored either (a release before refused them, or a write
outside the API). So a text with a run of 19 digits or more, where such an
integer could be, and a text orjson refuses, are read by `json.loads`: every
value reads as it did."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

# The longest integer within 64 bits has 20 digits, those beyond 19 digits
# may not fit: a run of 19 or more is read by the standard library.
_LONG_DIGITS = re.compile(rb"[0-9]{19}")


def loads(text: str | bytes) -> Any:
    raw = text.encode() if isinstance(text, str) else text
    if _LONG_DIGITS.search(raw) is None:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw)
