"""JSON Logic as a flag's rule may hold it: well formed, made only of the
operators the SDK's evaluator (`json-logic-qubit`) understands, and bounded.

Left out on purpose: `method` (it calls any method of a value the context
holds), `log` (it prints), `count` (outside core JsonLogic: the library
warns on each use) and `reduce`: its accumulator feeds each step's result into
the next, so a reducer that squares a number, or doubles a string or a list,
grows its work and memory exponentially with the array (fifteen elements
blocked a worker's event loop until its supervisor killed it; about thirty
would need more memory than the host has), in the service and in every SDK
client that evaluates the flag. Every other operator's work is bounded by the
rule's size and the context's, but for one: the library computes with Python's
integers of any size, and reads as one any string of digits (`"*"` turns
`"999..."` into an integer), so a product grows with its factors: 240 factors
of a context's 4,000-digit string held a worker's event loop for seven
seconds. So a rule multiplies at most MAX_FACTORS operands in all, none inside
an array operation (where it would run once per element), and a string that
reads as an integer is at most MAX_NUMERIC_TEXT characters, in a rule as in a
context (`numeric_text_problem`). JSON numbers are already those a double can
hold (service/api/json_body.py). And the whole data (every context, up to 20
of 16 KiB) can be copied: `{"var": ""}` is it, and `merge` of it feeding an
array operation whose body `cat`s it again held a worker for 17 s (40 and 40
copies). So `var` names a part of the data by a literal, but inside an array
operation's body (where `""` is the element); an array operation goes over a
`var` or a literal array of plain values; and `cat` and `merge` join at most
MAX_JOINED operands in all. What is left is linear in a context's size: under
these bounds an environment's 2,000 parts took at most about 0.25 s (a rule
comparing or joining whole contexts of 16 KiB as text, docs/sdk.md). A node is an object of exactly one operator (an object of
any other size would be a literal to the library, always truthy); arrays hold
operands.
"""

from __future__ import annotations

import json
import re
from typing import Any

from service.problems import Invalid

OPERATORS = frozenset(
    {
        # logic and comparison
        "==", "===", "!=", "!==", ">", ">=", "<", "<=", "!", "!!", "and", "or", "if", "?:",
        # data
        "var", "missing", "missing_some",
        # numbers, strings and arrays
        "+", "-", "*", "/", "%", "min", "max", "cat", "substr", "in", "merge",
        "map", "filter", "all", "none", "some",
    }
)  # fmt: skip
# The operators that run logic once per element of an array: nested, their
# costs multiply (three levels over literal arrays of 600 would be 2*10^8
# steps), so one may not hold another.
SCOPED = frozenset({"map", "filter", "all", "none", "some"})
MAX_DEPTH = 16
MAX_NODES = 500
MAX_BYTES = 16 * 1024
# The operands of every "*" of a rule, together.
MAX_FACTORS = 8
# The operands of every "cat" and "merge" of a rule, together: each may be a
# whole context (16 KiB of attributes), as text or as a list.
JOINING = frozenset({"cat", "merge"})
MAX_JOINED = 8
# The longest string that reads as an integer (int(): Unicode digits, a sign,
# underscores between digits, whitespace around) that a rule or a context may hold.
MAX_NUMERIC_TEXT = 64
_INTEGER_TEXT = re.compile(r"\s*[+-]?\d+(?:_\d+)*\s*")


def numeric_text_problem(value: Any) -> str | None:
    """What is wrong with the strings in `value` (any JSON value), or None: a
    string that JSON Logic would read as an integer, longer than MAX_NUMERIC_TEXT."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if len(item) > MAX_NUMERIC_TEXT and _INTEGER_TEXT.fullmatch(item):
                return (
                    f"holds a string of {len(item)} characters that JSON Logic would read as a "
                    f"number; at most {MAX_NUMERIC_TEXT}"
                )
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return None


def check_logic(logic: Any, pointer: str) -> int:
    """Refuse (Invalid, at `pointer`) logic that is not a bounded JSON Logic
    rule of known operators; its number of parts otherwise. `{}` is a rule
    that never matches (the SDK skips it)."""
    if not isinstance(logic, dict):
        raise Invalid("a rule's logic is a JSON Logic object", pointer)
    if not logic:
        return 0
    size = len(json.dumps(logic, ensure_ascii=False, separators=(",", ":")).encode())
    if size > MAX_BYTES:
        raise Invalid(f"a rule's logic is {size} bytes of JSON; at most {MAX_BYTES}", pointer)
    if (problem := numeric_text_problem(logic)) is not None:
        raise Invalid(f"a rule's logic {problem}", pointer)
    nodes = factors = joined = 0
    # (node, depth, inside an array operation, inside its body: where `var`
    # of the whole data is the element)
    pending: list[tuple[Any, int, bool, bool]] = [(logic, 1, False, False)]
    while pending:
        node, depth, scoped, in_body = pending.pop()
        nodes += 1
        if depth > MAX_DEPTH:
            raise Invalid(f"a rule's logic nests deeper than {MAX_DEPTH} levels", pointer)
        if nodes > MAX_NODES:
            raise Invalid(f"a rule's logic has more than {MAX_NODES} parts", pointer)
        if isinstance(node, dict):
            if len(node) != 1:
                raise Invalid("a JSON Logic operation is an object of one operator", pointer)
            ((operator, operands),) = node.items()
            if operator not in OPERATORS:
                raise Invalid(
                    f"{operator!r} is not an operator the SDK's evaluator understands", pointer
                )
            if operator in SCOPED and scoped:
                raise Invalid(
                    f"{operator!r} inside another array operation (map, filter, all, none, "
                    "some): their costs multiply",
                    pointer,
                )
            if operator == "var" and not in_body and not _names_a_part(operands):
                raise Invalid(
                    "'var' of the whole data, or of a computed name, only inside an array "
                    "operation's body (where it is the element): the whole data is every "
                    "context, and a rule that copies it many times costs as many copies",
                    pointer,
                )
            if operator == "*":
                if scoped:
                    raise Invalid(
                        "'*' inside an array operation (map, filter, all, none, some): a "
                        "product's cost grows with its factors, and would for every element",
                        pointer,
                    )
                factors += len(operands) if isinstance(operands, list) else 1
                if factors > MAX_FACTORS:
                    raise Invalid(
                        f"a rule's logic multiplies more than {MAX_FACTORS} operands in all "
                        "(a product's cost grows with its factors)",
                        pointer,
                    )
            if operator in JOINING:
                joined += len(operands) if isinstance(operands, list) else 1
                if joined > MAX_JOINED:
                    raise Invalid(
                        f"a rule's logic joins (cat, merge) more than {MAX_JOINED} operands in "
                        "all (each may be a whole context)",
                        pointer,
                    )
            if operator in SCOPED and isinstance(operands, list) and operands:
                source, *body = operands
                if not _plain_array_source(source):
                    raise Invalid(
                        f'{operator!r} goes over a context\'s array ({{"var": "user.tags"}}) '
                        "or a literal one: an array computed from the data could repeat a "
                        "whole context for every element",
                        pointer,
                    )
                pending.append((source, depth + 1, True, in_body))
                pending.extend((part, depth + 1, True, True) for part in body)
            else:
                pending.append((operands, depth + 1, scoped or operator in SCOPED, in_body))
        elif isinstance(node, list):
            pending.extend((operand, depth + 1, scoped, in_body) for operand in node)
    return nodes


def _names_a_part(operands: Any) -> bool:
    """Whether a `var`'s operands name a part of the data by a literal: not
    the whole data ("", null, none) nor a name computed by an operation."""
    name = operands[0] if isinstance(operands, list) and operands else operands
    if isinstance(operands, list) and not operands:
        return False
    return isinstance(name, str | int | float) and not isinstance(name, bool) and name != ""


def _plain_array_source(source: Any) -> bool:
    """A `var` of a named part of the data, or a literal array of plain values."""
    if isinstance(source, dict):
        ((operator, operands),) = source.items() if len(source) == 1 else ((None, None),)
        return operator == "var" and _names_a_part(operands)
    if isinstance(source, list):
        pending = list(source)
        while pending:
            item = pending.pop()
            if isinstance(item, dict):
                return False
            if isinstance(item, list):
                pending.extend(item)
        return True
    return False
