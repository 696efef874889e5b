"""The server's evaluation of a flag (service/flags/evaluation.py) is the
smplkit SDK's own (`smplkit/flags/clients.py`, `_evaluate_flag`), for
generated flags, rules and contexts: the SDK reads the flag from the
document the server answers, exactly as it does at runtime."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smplkit.flags.clients import _contexts_to_eval_dict, _evaluate_flag, _store_entry
from smplkit.flags.helpers import _flag_dict_from_json
from smplkit.flags.types import Context

from service.flags.evaluation import EvaluationContext, evaluate, evaluation_data

ENVIRONMENTS = ["production", "staging"]
ATTRIBUTES = ["plan", "beta", "age", "country"]
scalars = st.one_of(
    st.booleans(), st.integers(-5, 5), st.sampled_from(["free", "pro", "us", "eu", ""]), st.none()
)
variable = st.sampled_from(
    [f"user.{name}" for name in [*ATTRIBUTES, "key"]] + ["account.plan", "missing.x"]
).map(lambda path: {"var": path})
operand = st.one_of(scalars, variable)


def _logic() -> st.SearchStrategy[dict[str, Any]]:
    comparison = st.builds(
        lambda operator, left, right: {operator: [left, right]},
        st.sampled_from(["==", "===", "!=", "!==", ">", ">=", "<", "<=", "in", "/", "%"]),
        operand,
        operand,
    )
    return st.recursive(
        comparison,
        lambda inner: st.one_of(
            st.builds(lambda parts: {"and": parts}, st.lists(inner, min_size=1, max_size=3)),
            st.builds(lambda parts: {"or": parts}, st.lists(inner, min_size=1, max_size=3)),
            st.builds(lambda part: {"!": [part]}, inner),
            st.builds(lambda a, b, c: {"if": [a, b, c]}, inner, inner, inner),
        ),
        max_leaves=6,
    ) | st.just({})


served = st.sampled_from(["red", "green", "blue"])
rule = st.fixed_dictionaries(
    {"logic": _logic(), "value": served, "description": st.none() | st.just("why")}
)
environment = st.fixed_dictionaries(
    {
        "enabled": st.booleans(),
        "default": st.none() | served,
        "rules": st.lists(rule, max_size=4),
    }
)
flag_document = st.builds(
    lambda default, environments: {
        "type": "flag",
        "id": "generated",
        "attributes": {
            "name": "Generated",
            "description": None,
            "type": "STRING",
            "default": default,
            "values": None,
            "environments": environments,
            "managed": True,
            "created_at": "2026-12-06T00:00:00Z",
            "updated_at": "2026-12-06T00:00:00Z",
        },
    },
    served,
    st.dictionaries(st.sampled_from(ENVIRONMENTS), environment, max_size=2),
)
contexts = st.lists(
    st.builds(
        lambda kind, key, attributes: (kind, key, attributes),
        st.sampled_from(["user", "account"]),
        st.sampled_from(["u1", "u2", "a1"]),
        st.dictionaries(st.sampled_from(ATTRIBUTES), scalars, max_size=4),
    ),
    max_size=2,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flag_document, st.sampled_from([*ENVIRONMENTS, "development", None]), contexts)
def test_the_server_evaluates_as_the_sdk(
    document: dict[str, Any],
    environment_key: str | None,
    reported: list[tuple[str, str, dict[str, Any]]],
) -> None:
    sdk_contexts = [Context(kind, key, attributes) for kind, key, attributes in reported]
    sdk_data = _contexts_to_eval_dict(sdk_contexts)
    expected = _evaluate_flag(
        _store_entry(_flag_dict_from_json(document)), environment_key, sdk_data
    )
    ours = [EvaluationContext(kind, key, attributes) for kind, key, attributes in reported]
    attributes = document["attributes"]
    got = evaluate(
        attributes["default"], attributes["environments"], environment_key, evaluation_data(ours)
    )
    assert got.value == expected
    if got.rule is not None:
        rules = attributes["environments"][environment_key]["rules"]
        assert rules[got.rule]["value"] == expected
