"""json and jsonb values are read by orjson where it reads them as the
standard library does, and by the standard library elsewhere
(service/db/json_values.py): every value reads as it did."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.db.json_values import loads

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


def _same(left: Any, right: Any) -> bool:
    """Equal, and of the same types throughout (1 is not 1.0 here)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return list(left) == list(right) and all(_same(left[k], right[k]) for k in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(map(_same, left, right))
    return bool(left == right)


@given(VALUES)
def test_every_value_reads_as_the_standard_library_reads_it(value: Any) -> None:
    text = json.dumps(value)
    assert _same(loads(text), json.loads(text))
    assert _same(loads(text.encode()), json.loads(text))


@pytest.mark.parametrize(
    "text",
    [
        "123456789012345678901234567890",  # beyond 64 bits: orjson would read a float
        "-9223372036854775809",
        "18446744073709551616",
        '{"big": 1180591620717411303425, "list": [-1208925819614629174706176, 1]}',
        '["\u00e9t\u00e9", "été", 18446744073709551616, 1844674407370955161]',
        "1e400",  # beyond a double: orjson refuses, json reads infinity
        "-1E+400",
        "1e-400",
        "0.1000000000000000000000000001",
        '"\\u00e9 \\u2028 \\ud83d\\ude00"',
    ],
)
def test_what_orjson_reads_otherwise_reads_as_before(text: str) -> None:
    expected = json.loads(text)
    found = loads(text)
    if isinstance(expected, float) and math.isinf(expected):
        assert found == expected
    else:
        assert _same(found, expected)
