"""A flag's value for an environment and contexts, as the smplkit SDK
computes it in `smplkit/flags/clients.py` (`_evaluate_flag`), with the same
JSON Logic library: the environment's first rule whose logic is truthy
serves its value; else the environment's default, else the flag's; a
disabled environment serves that default; an unknown environment (or none)
the flag's default. A rule whose logic fails to evaluate is skipped."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from json_logic import jsonLogic

logger = logging.getLogger("service.flags.evaluation")


class Reason(StrEnum):
    RULE_MATCH = "RULE_MATCH"
    ENVIRONMENT_DEFAULT = "ENVIRONMENT_DEFAULT"
    DISABLED = "DISABLED"
    FLAG_DEFAULT = "FLAG_DEFAULT"


@dataclass(frozen=True)
class Evaluation:
    value: Any
    reason: Reason
    # The position of the rule that matched, in the environment's rules.
    rule: int | None = None


@dataclass(frozen=True)
class EvaluationContext:
    """One context as the SDK's `Context`: a type, a key, attributes."""

    type: str
    key: str
    attributes: Mapping[str, Any]


def evaluation_data(contexts: Iterable[EvaluationContext]) -> dict[str, Any]:
    """The data JSON Logic reads, as the SDK builds it: `{type: {key, **attributes}}`."""
    return {context.type: {"key": context.key, **context.attributes} for context in contexts}


def evaluate(
    default: Any, environments: Mapping[str, Any], environment: str | None, data: dict[str, Any]
) -> Evaluation:
    if environment is None or environment not in environments:
        return Evaluation(default, Reason.FLAG_DEFAULT)
    settings = environments[environment]
    own_default = settings.get("default")
    fallback = own_default if own_default is not None else default
    fallback_reason = Reason.ENVIRONMENT_DEFAULT if own_default is not None else Reason.FLAG_DEFAULT
    if not settings.get("enabled", True):
        return Evaluation(fallback, Reason.DISABLED)
    for position, rule in enumerate(settings.get("rules") or []):
        logic = rule.get("logic")
        if not logic:
            continue
        try:
            matched = jsonLogic(logic, data)
        except Exception:  # the SDK skips a rule its evaluator fails on; so does the server
            logger.debug("rule %d of the environment failed to evaluate", position, exc_info=True)
            continue
        if matched:
            return Evaluation(rule.get("value"), Reason.RULE_MATCH, position)
    return Evaluation(fallback, fallback_reason)
