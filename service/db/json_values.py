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
from typing import Any

import orjson

# The longest integer within 64 bits has 20 digits, those beyond 19 digits
# may not fit: a run of 19 or more is read by the standard library. It is
# found as a run of 19 zeros in the text with each digit made "0" and every
# other byte " ": `bytes.translate` and `in` find it in 0.9 us on a value of
# 1.3 KB, where a regular expression's search took 10 us, twice orjson's
# decoding of the value.
_LONG_RUN = 19
_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_ZEROS = b"0" * _LONG_RUN


def loads(text: str | bytes) -> Any:
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) < _LONG_RUN or _ZEROS not in raw.translate(_DIGITS_AS_ZEROS):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw)
