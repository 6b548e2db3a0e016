"""Plans as pydantic models: what is valid, and errors that name the file, the rule and the field."""

from __future__ import annotations

import pickle
from typing import Any, ClassVar

import pytest
from pydantic import ValidationError

import pruneplug
from pruneplug.plans import Plan, PlanError, Rule, loads_plan, parse_plan


def rules(*items: dict[str, Any]) -> dict[str, Any]:
    return {"rules": list(items)}


def error_of(data: object) -> PlanError:
    with pytest.raises(PlanError) as caught:
        parse_plan(data, source="plan.toml")
    return caught.value


def test_a_valid_plan_fills_defaults(registry: pruneplug.Registry) -> None:
    plan = parse_plan(rules({"strategy": "l1_unstructured", "params": {"amount": 0.3}}))
    (rule,) = plan.rules
    assert (rule.scope, rule.tensors, rule.modules, rule.types, rule.exclude, rule.optional) == (
        "local",
        ("weight",),
        None,
        None,
        (),
        False,
    )
    assert plan.version == 1
    assert parse_plan(plan) is plan


def test_plans_are_frozen(registry: pruneplug.Registry) -> None:
    plan = Plan(rules=[Rule(strategy="identity")])
    with pytest.raises(ValidationError):
        plan.rules[0].scope = "global"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("data", "rule", "field", "words"),
    [
        (rules({"stratgy": "identity"}), 0, "stratgy", ["unknown field 'stratgy'", "Did you mean 'strategy'?"]),
        (rules({"strategy": "identity"}, {"strategy": "l1_unstructurd"}), 1, "strategy", ["'l1_unstructured'"]),
        (
            rules({"strategy": "l1_unstructured", "params": {"amout": 3}}),
            0,
            "params.amount",
            ["missing required parameter 'amount'", "unknown parameter 'amout'", "Did you mean 'amount'?"],
        ),
        (rules({"strategy": "l1_unstructured", "params": {"amount": 1.5}}), 0, "params.amount", ["[0, 1]"]),
        (rules({"strategy": "l1_unstructured", "params": {"amount": True}}), 0, "params.amount", ["bool"]),
        (rules({"strategy": "ln_structured", "params": {"amount": 1, "n": "l2"}}), 0, "params.n", ["norm order"]),
        (
            rules({"strategy": "ln_structured", "scope": "global", "params": {"amount": 1, "n": 1}}),
            0,
            "scope",
            ["kind 'unstructured'", "'ln_structured' is of kind 'structured'", "scope 'local'"],
        ),
        (rules({"strategy": "identity", "scope": "everywhere"}), 0, "scope", ["'local' or 'global'"]),
        (rules({"strategy": "identity", "module_regex": "fc[1"}), 0, "module_regex", ["regular expression"]),
        (rules({"strategy": "identity", "tensors": ["fc1.weight"]}), 0, "tensors", ["without dots (got 'fc1.weight')"]),
        (rules({"strategy": "identity", "tensors": []}), 0, "tensors", ["at least 1"]),
        (rules({"strategy": "identity", "types": "Linear"}), 0, "types", ["a list"]),
        (rules({"strategy": "identity", "optional": "yes"}), 0, "optional", ["boolean"]),
        (rules({"strategy": 3}), 0, "strategy", ["string"]),
        ({"rules": []}, None, "rules", ["at least 1"]),
        ({"rule": [{"strategy": "identity"}]}, None, "rule", ["unknown field 'rule'", "'rules'"]),
        ({"version": 2, "rules": [{"strategy": "identity"}]}, None, "version", ["1"]),
    ],
)
def test_errors_name_the_rule_and_field(
    registry: pruneplug.Registry, data: dict[str, Any], rule: int | None, field: str, words: list[str]
) -> None:
    error = error_of(data)
    assert (error.source, error.rule, error.field) == ("plan.toml", rule, field)
    message = str(error)
    expected = f"plan.toml: rules[{rule}].{field}: " if rule is not None else f"plan.toml: {field}: "
    assert message.startswith(expected), message
    for word in words:
        assert word in message


def test_a_strategy_of_kind_global_in_a_rule_of_scope_global_is_explained(registry: pruneplug.Registry) -> None:
    """The two meanings of "global" are told apart: kind 'global' is one mask per whole tensor."""

    class WholeTensor(pruneplug.BasePruningMethod):
        PRUNING_TYPE = "global"
        name = "whole_tensor"

        def compute_mask(self, t: Any, default_mask: Any) -> Any:
            return default_mask

    pruneplug.register(WholeTensor)
    error = error_of(rules({"strategy": "whole_tensor", "scope": "global"}))
    assert (error.rule, error.field) == (0, "scope")
    words = ["kind 'unstructured'", "'whole_tensor' is of kind 'global'", "per tensor", "across tensors", "'local'"]
    for word in words:
        assert word in str(error), str(error)


def test_every_problem_is_listed(registry: pruneplug.Registry) -> None:
    error = error_of(rules({"stratgy": "identity"}, {"strategy": "identity", "scope": 1}))
    locations = [loc for loc, _ in error.problems]
    assert locations == ["rules[0].stratgy", "rules[0].strategy", "rules[1].scope"]
    assert "rules[1].scope" in str(error)


def test_every_problem_is_a_line_of_the_message(registry: pruneplug.Registry) -> None:
    """Several bad rules and several bad fields: each problem on a line of its own, naming the file."""
    error = error_of(
        rules(
            {"strategy": "ln_structured", "params": {"amount": "lots", "n": "x", "dimm": 3}},
            {"strategy": "identity", "scope": "everywhere", "typo": 1},
            {"strategy": "l1_unstructured", "params": {"amount": 0.5}},
            {"strategy": "identity", "optional": "perhaps"},
        )
    )
    lines = str(error).splitlines()
    assert lines == [
        "plan.toml: rules[0].params.amount: amount must be an int (a count) or a float in [0, 1] (a fraction), "
        "got str 'lots'",
        "plan.toml: rules[0].params.n: n='x' is not a norm order; use a number, 'inf', '-inf', 'fro' or 'nuc'",
        "plan.toml: rules[0].params.dimm: unknown parameter 'dimm'. Did you mean 'dim'? "
        "Accepted parameters: amount, n, dim, prune_bias",
        "plan.toml: rules[1].typo: unknown field 'typo'. Did you mean 'types'? Fields: description, modules, "
        "module_regex, types, exclude, tensors, scope, optional, channels, round_to, group_reduction, allocation, "
        "owl_threshold, owl_spread, strategy, params, schedule",
        "plan.toml: rules[1].scope: must be 'local' or 'global', got 'everywhere'",
        "plan.toml: rules[3].optional: must be a valid boolean, got 'perhaps'",
    ]
    assert [loc for loc, _ in error.problems][:3] == [
        "rules[0].params.amount",
        "rules[0].params.n",
        "rules[0].params.dimm",
    ]
    assert (error.rule, error.field) == (0, "params.amount")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"rules": []}, "plan.toml: rules: a plan needs at least 1 rule; this one has none"),
        (
            rules({"strategy": "identity", "tensors": []}),
            "plan.toml: rules[0].tensors: must list at least 1 item, got 0",
        ),
        (rules({"strategy": "identity", "types": "Linear"}), "plan.toml: rules[0].types: must be a list, got 'Linear'"),
        ({"version": 2, "rules": [{"strategy": "identity"}]}, "plan.toml: version: must be 1, got 2"),
    ],
)
def test_pydantic_wording_becomes_the_plans(registry: pruneplug.Registry, data: dict[str, Any], expected: str) -> None:
    """'Input should be', 'Tuple should have at least 1 item after validation' are pydantic's words, not a plan's."""
    assert str(error_of(data)) == expected


def test_plan_error_is_a_pruneplug_value_error_and_pickles(registry: pruneplug.Registry) -> None:
    error = error_of(rules({"strategy": "nope"}))
    assert isinstance(error, pruneplug.PruneplugError) and isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), copy.rule, copy.field, copy.source) == (
        PlanError,
        str(error),
        0,
        "strategy",
        "plan.toml",
    )


@pytest.mark.parametrize("data", [None, [], "rules", 3, [{"strategy": "identity"}]])
def test_not_a_mapping(data: object) -> None:
    assert "a plan is a table/mapping" in str(error_of(data))


def test_plugin_strategies_are_validated_by_their_own_model(registry: pruneplug.Registry) -> None:
    class SignedParams(pruneplug.StrategyParams):
        amount: float
        keep_sign: bool = False

    class Signed(pruneplug.UnstructuredStrategy):
        name: ClassVar[str | None] = "signed"
        Params: ClassVar[type[pruneplug.StrategyParams]] = SignedParams

        def __init__(self, amount: float, keep_sign: bool = False) -> None:
            super().__init__(amount)
            self.keep_sign = keep_sign

        def scores(self, t: Any, alive: Any) -> Any:
            return t

    with pytest.raises(PlanError, match=r"rules\[0\].strategy"):
        parse_plan(rules({"strategy": "signed", "params": {"amount": 0.5}}))
    with registry.registered(Signed):
        assert parse_plan(rules({"strategy": "signed", "params": {"amount": 0.5, "keep_sign": True}}))
        error = error_of(rules({"strategy": "signed", "params": {"amount": 0.5, "keep_sing": True}}))
        assert error.field == "params.keep_sing" and "Did you mean 'keep_sign'?" in str(error)


def test_the_source_is_named_for_parse_errors(registry: pruneplug.Registry) -> None:
    with pytest.raises(PlanError) as caught:
        loads_plan("[[rules]\nstrategy = 1", "toml", source="broken.toml")
    assert str(caught.value).startswith("broken.toml: not valid TOML")
    with pytest.raises(PlanError, match="unknown plan format 'ini'"):
        loads_plan("", "ini")
