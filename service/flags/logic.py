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
`var` or a literal array of plain values; `cat` and `merge` join at most
MAX_JOINED operands in all; and the names `var`, `missing` and
`missing_some` look up are short literals (`_check_names`). Last, what one
evaluation of an environment's rules may run is counted (`LogicSize.work`: a
part in an array operation's body once per element, a name once per dotted
part) and bounded (service/flags/definitions.py, MAX_ENVIRONMENT_WORK). What is left is linear in a context's size: under
these bounds an environment's 2,000 parts took at most about 0.25 s (a rule
comparing or joining whole contexts of 16 KiB as text, docs/sdk.md). A node is an object of exactly one operator (an object of
any other size would be a literal to the library, always truthy); arrays hold
operands.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
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
MAX_JOINED = 8
# The operators whose cost grows with their operands, by the bound their
# operands share in a rule: (at most, what they do, why).
_OPERAND_BOUNDS = {
    "multiply": (MAX_FACTORS, "multiplies", "a product's cost grows with its factors"),
    "join": (MAX_JOINED, "joins (cat, merge)", "each may be a whole context"),
}
_BOUNDED_BY = {"*": "multiply", "cat": "join", "merge": "join"}
# The elements an array operation's body may run for: a context's arrays hold
# at most this many (service/api/flags.py), and a literal array's count as parts.
BODY_RUNS = 100
# What `var`, `missing` and `missing_some` may name (`_check_names`).
NAMING = frozenset({"missing", "missing_some"})
MAX_NAME = 256
MAX_NAME_PARTS = 16
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


@dataclass(frozen=True)
class LogicSize:
    """A rule's parts, and its work: the parts an evaluation may run, a part
    inside an array operation's body counted once per element it may see
    (BODY_RUNS) and a name once per dotted part it looks up."""

    parts: int
    work: int


def check_logic(logic: Any, pointer: str) -> LogicSize:
    """Refuse (Invalid, at `pointer`) logic that is not a bounded JSON Logic
    rule of known operators; its number of parts otherwise. `{}` is a rule
    that never matches (the SDK skips it)."""
    if not isinstance(logic, dict):
        raise Invalid("a rule's logic is a JSON Logic object", pointer)
    if not logic:
        return LogicSize(0, 0)
    size = len(json.dumps(logic, ensure_ascii=False, separators=(",", ":")).encode())
    if size > MAX_BYTES:
        raise Invalid(f"a rule's logic is {size} bytes of JSON; at most {MAX_BYTES}", pointer)
    if (problem := numeric_text_problem(logic)) is not None:
        raise Invalid(f"a rule's logic {problem}", pointer)
    nodes = work = 0
    operands_of: dict[str, int] = dict.fromkeys(_OPERAND_BOUNDS, 0)
    # (node, depth, inside an array operation, inside its body: where `var`
    # of the whole data is the element)
    pending: list[tuple[Any, int, bool, bool]] = [(logic, 1, False, False)]
    while pending:
        node, depth, scoped, in_body = pending.pop()
        nodes += 1
        runs = BODY_RUNS if in_body else 1
        work += runs
        if isinstance(node, str):
            work += runs * node.count(".")  # a name's parts, if it is one
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
            if operator == "var":
                if _is_whole_data(operands):
                    if not in_body:
                        raise Invalid(
                            "'var' of the whole data only inside an array operation's body "
                            "(where it is the element): the whole data is every context, and "
                            "a rule that copies it many times costs as many copies",
                            pointer,
                        )
                else:
                    _check_names(operator, [_first(operands)], pointer)
            elif operator in NAMING:
                names = (
                    operands[1] if operator == "missing_some" and _is_pair(operands) else operands
                )
                if isinstance(names, list) and len(names) == 1 and isinstance(names[0], list):
                    names = names[0]
                _check_names(operator, names if isinstance(names, list) else [names], pointer)
            if operator == "*" and scoped:
                raise Invalid(
                    "'*' inside an array operation (map, filter, all, none, some): a "
                    "product's cost grows with its factors, and would for every element",
                    pointer,
                )
            if (bounded := _BOUNDED_BY.get(operator)) is not None:
                operands_of[bounded] += len(operands) if isinstance(operands, list) else 1
                at_most, what, why = _OPERAND_BOUNDS[bounded]
                if operands_of[bounded] > at_most:
                    raise Invalid(
                        f"a rule's logic {what} more than {at_most} operands in all ({why})",
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
    return LogicSize(nodes, work)


def _first(operands: Any) -> Any:
    return operands[0] if isinstance(operands, list) and operands else operands


def _is_pair(operands: Any) -> bool:
    return isinstance(operands, list) and len(operands) == 2


def _is_whole_data(operands: Any) -> bool:
    """Whether a `var` names the whole data: "", null, or no name at all."""
    if isinstance(operands, list) and not operands:
        return True
    return _first(operands) in ("", None)


def _check_names(operator: str, names: list[Any], pointer: str) -> None:
    """The names `var`, `missing` and `missing_some` look up: literals (a name
    read from the data could be anything), each at most MAX_NAME characters
    and MAX_NAME_PARTS dotted parts. The library looks a name up part by part,
    raising and catching an error for each part it tries on a string: a name
    of 8,000 parts cost 1.3 ms, for every element of an array operation."""
    for name in names:
        if isinstance(name, bool) or not isinstance(name, str | int | float):
            raise Invalid(f"{operator!r} takes literal names (a string or a number)", pointer)
        text = str(name)
        if len(text) > MAX_NAME or text.count(".") >= MAX_NAME_PARTS:
            raise Invalid(
                f"{operator!r} names at most {MAX_NAME} characters in at most "
                f"{MAX_NAME_PARTS} dotted parts",
                pointer,
            )


def _plain_array_source(source: Any) -> bool:
    """A `var` (its name is checked as every `var`'s is), or a literal array
    of plain values."""
    if isinstance(source, dict):
        return list(source) == ["var"]
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
