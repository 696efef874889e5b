"""A flag's definition checked as a whole, as the SDK's generated models
describe it: values of the flag's type everywhere (default, allowed values,
environment defaults, rule values), a constrained flag serving only its
allowed values, rules of bounded JSON Logic, and environments that exist."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from service.flags.logic import check_logic
from service.models import Environment, table
from service.problems import Invalid, Missing

environments = table(Environment)
MAX_VALUES = 100
MAX_RULES = 100
# The parts of all the rules of one environment: what one evaluation may walk.
MAX_ENVIRONMENT_LOGIC = 2000
# What one evaluation of an environment's rules may run (service/flags/logic.py,
# LogicSize.work): about 2 us each, a tenth of a second in all.
MAX_ENVIRONMENT_WORK = 50_000
MAX_VALUE_BYTES = 32 * 1024


class FlagType(StrEnum):
    """The SDK's `FlagType` (`smplkit/_generated/flags/models/flag_type.py`)."""

    BOOLEAN = "BOOLEAN"
    STRING = "STRING"
    NUMERIC = "NUMERIC"
    JSON = "JSON"


def matches(flag_type: FlagType, value: Any) -> bool:
    """Whether `value` is a value of `flag_type` (null is none: it means "unset")."""
    if flag_type is FlagType.BOOLEAN:
        return isinstance(value, bool)
    if flag_type is FlagType.STRING:
        return isinstance(value, str)
    if flag_type is FlagType.NUMERIC:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, dict | list)


def same(left: Any, right: Any) -> bool:
    """JSON equality: true is not 1, 1 is 1.0, objects by their members."""
    return _canonical(left) == _canonical(right)


def _canonical(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(float(value))
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass
class FlagDefinition:
    """What a write stores of a flag, before it is checked."""

    type: FlagType
    default: Any
    allowed_values: list[dict[str, Any]] | None = None
    environments: dict[str, dict[str, Any]] = field(default_factory=dict)

    def check(self, at: str) -> None:
        """Refuse (Invalid) what breaks a rule above; `at` points at the attributes."""
        if self.allowed_values is not None:
            self._check_allowed(at)
        self._check_value(self.default, f"{at}/default")
        for key, environment in self.environments.items():
            where = f"{at}/environments/{_escape(key)}"
            if environment.get("default") is not None:
                self._check_value(environment["default"], f"{where}/default")
            rules = environment.get("rules") or []
            if len(rules) > MAX_RULES:
                raise Invalid(f"at most {MAX_RULES} rules in an environment", f"{where}/rules")
            parts = work = 0
            for position, rule in enumerate(rules):
                size = check_logic(rule.get("logic"), f"{where}/rules/{position}/logic")
                parts, work = parts + size.parts, work + size.work
                self._check_value(rule.get("value"), f"{where}/rules/{position}/value")
            if parts > MAX_ENVIRONMENT_LOGIC:
                raise Invalid(
                    f"the rules of an environment have {parts} parts of JSON Logic; at most "
                    f"{MAX_ENVIRONMENT_LOGIC}",
                    f"{where}/rules",
                )
            if work > MAX_ENVIRONMENT_WORK:
                raise Invalid(
                    f"the rules of an environment may run {work} parts of JSON Logic in one "
                    f"evaluation (a part in an array operation's body once per element, a "
                    f"name once per dotted part); at most {MAX_ENVIRONMENT_WORK}",
                    f"{where}/rules",
                )

    def _check_allowed(self, at: str) -> None:
        allowed = self.allowed_values or []
        if len(allowed) > MAX_VALUES:
            raise Invalid(f"at most {MAX_VALUES} allowed values", f"{at}/values")
        if self.type is FlagType.BOOLEAN and len(allowed) != 2:
            raise Invalid("a constrained BOOLEAN flag declares exactly two values", f"{at}/values")
        for position, entry in enumerate(allowed):
            if not matches(self.type, entry["value"]):
                raise Invalid(
                    f"an allowed value of a {self.type} flag is a {_described(self.type)}",
                    f"{at}/values/{position}/value",
                )

    def _check_value(self, value: Any, pointer: str) -> None:
        if not matches(self.type, value):
            raise Invalid(f"a {self.type} flag's value is a {_described(self.type)}", pointer)
        size = len(json.dumps(value, ensure_ascii=False).encode())
        if size > MAX_VALUE_BYTES:
            raise Invalid(f"a value is {size} bytes of JSON; at most {MAX_VALUE_BYTES}", pointer)
        if self.allowed_values is not None and not any(
            same(value, entry["value"]) for entry in self.allowed_values
        ):
            raise Invalid("not one of the flag's allowed values", pointer)


def _described(flag_type: FlagType) -> str:
    return {
        FlagType.BOOLEAN: "boolean",
        FlagType.STRING: "string",
        FlagType.NUMERIC: "number",
        FlagType.JSON: "JSON object or array",
    }[flag_type]


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


async def check_environments_exist(
    connection: AsyncConnection, account_id: uuid.UUID, keys: Iterable[str], at: str
) -> None:
    """Refuse (Missing) a definition naming an environment the account lacks."""
    wanted = set(keys)
    if not wanted:
        return
    found = set(
        (
            await connection.scalars(
                select(environments.c.key)
                .where(environments.c.account_id == account_id, environments.c.key.in_(wanted))
                # Held until the write commits: a concurrent delete of one of
                # them (FOR UPDATE) waits, then sees this flag target it.
                .with_for_update(key_share=True)
            )
        ).all()
    )
    if missing := sorted(wanted - found):
        raise Missing(
            f"no environment with key {missing[0]!r}", f"{at}/environments/{_escape(missing[0])}"
        )
