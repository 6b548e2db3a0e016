"""apply_plan: rules in order, the native API's results, all or nothing, and fuzzed plans never crash."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from hypothesis import given, strategies as st
from torch import Tensor, nn

import pruneplug
from pruneplug.models import LeNet
from pruneplug.plans import PlanError, apply_plan, parse_plan, resolve_plan
from pruneplug.testing import assert_unchanged, snapshot


def masks(model: nn.Module) -> dict[str, Tensor]:
    return {k: v for k, v in model.state_dict().items() if k.endswith("_mask")}


PLAN = {
    "rules": [
        {"strategy": "ln_structured", "types": ["Conv2d"], "params": {"amount": 0.5, "n": 2, "dim": 0}},
        {"strategy": "l1_unstructured", "modules": ["conv*"], "tensors": ["bias"], "params": {"amount": 1}},
        {
            "strategy": "l1_unstructured",
            "scope": "global",
            "types": ["Linear"],
            "exclude": ["fc3"],
            "params": {"amount": 0.4},
        },
        {"strategy": "l1_unstructured", "module_regex": "fc[12]", "params": {"amount": 0.1}},
    ]
}


def test_a_plan_does_what_the_native_calls_do(registry: pruneplug.Registry) -> None:
    planned, by_hand = LeNet(), LeNet()
    by_hand.load_state_dict(planned.state_dict())
    result = apply_plan(planned, PLAN)
    for conv in (by_hand.conv1, by_hand.conv2):
        pruneplug.prune(conv, "weight", "ln_structured", amount=0.5, n=2, dim=0)
    for conv in (by_hand.conv1, by_hand.conv2):
        pruneplug.prune(conv, "bias", "l1_unstructured", amount=1)
    pruneplug.prune_global([(by_hand.fc1, "weight"), (by_hand.fc2, "weight")], "l1_unstructured", amount=0.4)
    for fc in (by_hand.fc1, by_hand.fc2):
        pruneplug.prune(fc, "weight", "l1_unstructured", amount=0.1)
    assert masks(planned).keys() == masks(by_hand).keys()
    for key, mask in masks(planned).items():
        assert torch.equal(mask, masks(by_hand)[key]), key
    assert [r.tensors for r in result.rules] == [
        ("conv1.weight", "conv2.weight"),
        ("conv1.bias", "conv2.bias"),
        ("fc1.weight", "fc2.weight"),
        ("fc1.weight", "fc2.weight"),
    ]
    global_rule = result.rules[2]
    assert global_rule.newly_pruned == round(0.4 * (30720 + 10080))
    assert global_rule.sparsity_before == 0 and global_rule.sparsity_after == pytest.approx(0.4)
    assert result.tensor("fc1.weight").history[-2:] == (
        "l1_unstructured(amount=0.4) [global over 2 tensors]",
        "l1_unstructured(amount=0.1)",
    )
    assert result.totals.masked_tensors == 6 and not result.dry_run


def test_mask_storage_is_how_every_rule_stores_its_masks(registry: pruneplug.Registry) -> None:
    packed, plain = LeNet(), LeNet()
    plain.load_state_dict(packed.state_dict())
    apply_plan(packed, {**PLAN, "mask_storage": "packed"})
    apply_plan(plain, PLAN)
    stored = {name: buffer for name, buffer in packed.named_buffers() if name.endswith("_mask")}
    assert stored.keys() == masks(plain).keys()
    assert all(isinstance(mask, pruneplug.PackedMask) for mask in stored.values())
    for key, mask in masks(packed).items():  # (state_dicts hold plain bool masks)
        assert type(mask) is Tensor and torch.equal(mask, masks(plain)[key]), key
    model = LeNet()
    with pytest.raises(PlanError, match="mask_storage") as caught:
        apply_plan(model, {**PLAN, "mask_storage": "bits"})
    assert "'bool'" in str(caught.value) and "'packed'" in str(caught.value)
    assert not pruneplug.is_pruned(model)


def test_a_plan_from_a_file(registry: pruneplug.Registry, tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(PLAN))
    model = LeNet()
    apply_plan(model, path)
    apply_plan(model, str(path))  # iterative: every rule acts on what is left
    assert pruneplug.pruning_history(model.fc3, "weight") == []
    assert len(pruneplug.pruning_history(model.fc1, "weight")) == 4


def test_dry_run_reports_the_same_and_changes_nothing(registry: pruneplug.Registry) -> None:
    plan = {"rules": [{"strategy": "random_unstructured", "scope": "global", "params": {"amount": 0.3}}]}
    model = LeNet()
    before = snapshot(model)
    rng = torch.get_rng_state()
    dry = apply_plan(model, plan, dry_run=True)
    assert_unchanged(before, model)
    assert torch.equal(rng, torch.get_rng_state())  # the random draws are rewound too
    real = apply_plan(model, plan)
    assert dry.dry_run and not real.dry_run
    assert dry.totals == real.totals and dry.rules == real.rules and dry.tensors == real.tensors


def test_a_late_failure_rolls_back_every_rule(registry: pruneplug.Registry) -> None:
    plan = {
        "rules": [
            {"strategy": "random_unstructured", "types": ["Linear", "Conv2d"], "params": {"amount": 0.5}},
            {"strategy": "l1_unstructured", "modules": ["fc3"], "params": {"amount": 800}},  # 420 are left
        ]
    }
    model = LeNet()
    before, rng = snapshot(model), torch.get_rng_state()
    with pytest.raises(PlanError) as caught:
        apply_plan(model, plan)
    assert (caught.value.rule, caught.value.field) == (1, "params.amount")
    assert "fc3.weight" in str(caught.value) and isinstance(caught.value.__cause__, pruneplug.InvalidAmountError)
    # The tensor is named once, by its name in the model, with its module's type (not again as 'Linear.weight').
    assert str(caught.value).startswith(
        "rules[1].params.amount: fc3.weight (Linear), strategy 'l1_unstructured': amount=800 is larger than"
    ), str(caught.value)
    assert_unchanged(before, model)
    assert torch.equal(rng, torch.get_rng_state())
    assert not pruneplug.is_pruned(model)


def test_a_strategy_failing_on_a_later_tensor_rolls_back_everything(registry: pruneplug.Registry) -> None:
    class Fragile(pruneplug.UnstructuredStrategy):
        """Fails on the third tensor it sees."""

        name: ClassVar[str | None] = "fragile"
        seen: ClassVar[int] = 0

        def scores(self, t: Tensor, alive: Tensor | None) -> Tensor:
            type(self).seen += 1
            if type(self).seen == 3:
                raise RuntimeError("boom")
            return t.abs()

    model = LeNet()
    pruneplug.prune(model.fc1, "weight", "l1_unstructured", amount=5)  # already pruned: rules stack on it
    before = snapshot(model)
    plan = {
        "rules": [
            {"strategy": "fragile", "types": ["Conv2d"], "params": {"amount": 0.5}},
            {"strategy": "fragile", "types": ["Linear"], "params": {"amount": 0.5}},
        ]
    }
    with (
        registry.registered(Fragile),
        pytest.raises(
            PlanError, match=r"rules\[1\]\.strategy: fc1\.weight \(Linear\), strategy .fragile.: .*boom"
        ) as caught,
    ):
        apply_plan(model, plan)
    assert isinstance(caught.value.__cause__, pruneplug.StrategyFailedError)
    assert_unchanged(before, model)
    assert len(pruneplug.pruning_history(model.fc1, "weight")) == 1


@pytest.mark.parametrize(
    ("rule", "field", "words"),
    [
        ({"types": ["Conv2D"]}, "types[0]", ["no module of the model is a 'Conv2D'", "Did you mean 'Conv2d'?"]),
        ({"modules": ["fc1", "fc9"]}, "modules[1]", ["'fc9' matches no module", "Modules: "]),
        ({"exclude": ["fc4"]}, "exclude[0]", ["'fc4' matches no module"]),
        ({"module_regex": "fc"}, "module_regex", ["matches no module"]),
        ({"tensors": ["wieght"]}, "tensors[0]", ["no selected module has a parameter 'wieght'", "'weight'"]),
        ({"modules": ["conv1"], "types": ["Linear"]}, "modules", ["no module passes every filter"]),
        ({"modules": ["maxpool"]}, "tensors[0]", ["no selected module has a parameter 'weight'"]),
        (
            {"modules": ["fc3"], "params": {"amount": 841}},
            "params.amount",
            ["more than the 840 unpruned entries of fc3.weight"],
        ),
        (
            {"scope": "global", "types": ["Linear"], "params": {"amount": 10**6}},
            "params.amount",
            ["the 3 selected tensors"],
        ),
        (
            {"strategy": "ln_structured", "tensors": ["bias"], "modules": ["fc1"], "params": {"amount": 1, "n": 1}},
            "params.dim",
            ["fc1.bias", "at least 2 dims"],
        ),
        (
            {"strategy": "ln_structured", "modules": ["fc1"], "params": {"amount": 1, "n": 1, "dim": 2}},
            "params.dim",
            ["dim=2 is out of range"],
        ),
        (
            {"strategy": "random_structured", "modules": ["conv1"], "params": {"amount": 7, "dim": 0}},
            "params.amount",
            ["6 unpruned slices of conv1.weight along dim 0"],
        ),
    ],
)
def test_rules_are_checked_against_the_model_before_anything_changes(
    registry: pruneplug.Registry, rule: dict[str, Any], field: str, words: list[str]
) -> None:
    model = LeNet()
    before = snapshot(model)
    first = {"strategy": "l1_unstructured", "params": {"amount": 0.5}}
    faulty = {"strategy": "l1_unstructured", "params": {"amount": 1}} | rule
    with pytest.raises(PlanError) as caught:
        apply_plan(model, {"rules": [first, faulty]})
    assert (caught.value.rule, caught.value.field) == (1, field), str(caught.value)
    for word in words:
        assert word in str(caught.value)
    assert_unchanged(before, model)
    # an optional rule that selects nothing is skipped instead
    if field in ("types[0]", "modules[1]", "module_regex", "tensors[0]", "modules"):
        skipped = apply_plan(model, {"rules": [first, faulty | {"optional": True}]}).rules[1]
        assert (skipped.skipped is not None and skipped.tensors == ()) or skipped.tensors == ("fc1.weight",)


def test_optional_rules_ignore_selectors_some_models_lack(registry: pruneplug.Registry) -> None:
    rule = {"strategy": "l1_unstructured", "modules": ["fc1", "attention*"], "optional": True, "params": {"amount": 1}}
    result = apply_plan(LeNet(), {"rules": [rule]})
    assert result.rules[0].tensors == ("fc1.weight",) and result.rules[0].skipped is None


def test_resolution_uses_module_types_and_subclasses(registry: pruneplug.Registry) -> None:
    class MyLinear(nn.Linear):
        pass

    model = nn.Sequential(nn.Conv2d(1, 2, 3), MyLinear(4, 4), nn.Sequential(nn.Linear(4, 2)))
    plan = parse_plan({"rules": [{"strategy": "identity", "types": ["Linear"], "tensors": ["weight", "bias"]}]})
    (resolved,) = resolve_plan(model, plan)
    assert [t.name for t in resolved.targets] == ["1.weight", "1.bias", "2.0.weight", "2.0.bias"]
    qualified = parse_plan({"rules": [{"strategy": "identity", "types": ["torch.nn.modules.conv.Conv2d"]}]})
    assert [t.name for t in resolve_plan(model, qualified)[0].targets] == ["0.weight"]
    public = parse_plan({"rules": [{"strategy": "identity", "types": ["torch.nn.Conv2d"]}]})
    assert [t.name for t in resolve_plan(model, public)[0].targets] == ["0.weight"]


def test_progress_is_reported_per_rule(registry: pruneplug.Registry) -> None:
    calls: list[tuple[int, int]] = []
    apply_plan(LeNet(), PLAN, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


@pytest.mark.parametrize("bad", [None, 3, ["rules"], b"rules = []", object()])
def test_arguments_that_are_not_plans_or_models(registry: pruneplug.Registry, bad: object) -> None:
    with pytest.raises(PlanError):
        apply_plan(LeNet(), bad)  # type: ignore[arg-type]
    with pytest.raises(PlanError, match="torch.nn.Module"):
        apply_plan(bad, PLAN)  # type: ignore[arg-type]


# --- fuzzing: any data, any mutation of a good plan ---------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**9) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
FIELDS = [
    "strategy",
    "params",
    "scope",
    "modules",
    "module_regex",
    "types",
    "exclude",
    "tensors",
    "optional",
    "channels",
    "round_to",
    "group_reduction",
]
CHANNEL_PLAN = {
    "example_input": {"shape": [2, 1, 28, 28]},
    "compact": True,
    "rules": [
        {"strategy": "ln_structured", "channels": True, "types": ["Conv2d"], "params": {"amount": 0.5, "n": 2}},
        {"strategy": "l1_unstructured", "types": ["Linear"], "params": {"amount": 0.3}},
    ],
}
NAMES = ["fc1", "fc*", "conv?", "*", "", "fc9", "weight", "bias", "Linear", "Conv2d", "l1_unstructured", "[", "amount"]


@st.composite
def mutated_plans(draw: st.DrawFn) -> object:
    plan: Any = copy.deepcopy(draw(st.sampled_from([PLAN, CHANNEL_PLAN])))
    for _ in range(draw(st.integers(1, 3))):
        rules = [r for r in plan["rules"] if isinstance(r, dict)]
        rule = draw(st.sampled_from(rules)) if rules else {}
        action = draw(st.sampled_from(["drop", "set", "name", "typo", "param", "nest", "input", "top"]))
        field = draw(st.sampled_from(FIELDS))
        if action == "drop":
            rule.pop(field, None)
        elif action == "set":
            rule[field] = draw(json_values)
        elif action == "name":
            rule[field] = draw(st.sampled_from(NAMES) | st.lists(st.sampled_from(NAMES), max_size=3))
        elif action == "typo" and field in rule:
            rule[field[:-1] + field[-1] * 2] = rule.pop(field)
        elif action == "param":
            rule.setdefault("params", {})
            if isinstance(rule["params"], dict):
                rule["params"][draw(st.sampled_from(["amount", "n", "dim", "prune_bias", "amout"]))] = draw(
                    json_values | st.integers(-5, 50_000) | st.floats(-1, 2)
                )
        elif action == "nest":
            plan["rules"].append(draw(json_values))
        elif action == "input":
            example = plan.setdefault("example_input", {})
            key = draw(st.sampled_from(["shape", "dtype", "low", "high", "shap", "compact"]))
            value = draw(
                json_values | st.lists(st.integers(-1, 30), max_size=5) | st.sampled_from(["int64", "bfloat16"])
            )
            if key == "compact":
                plan["compact"] = value
            elif isinstance(example, dict):
                example[key] = value
        else:
            plan = draw(st.sampled_from([plan, {"rules": draw(json_values)}, draw(json_values)]))
            if not isinstance(plan, dict) or not isinstance(plan.get("rules"), list):
                break
    return plan


@given(st.one_of(mutated_plans(), json_values))
def test_fuzzed_plans_raise_plan_errors_and_leave_the_model_alone(registry: pruneplug.Registry, data: object) -> None:
    model = LeNet()
    before = snapshot(model)
    try:
        apply_plan(model, data)  # type: ignore[arg-type]
    except PlanError as error:
        assert str(error)
        assert_unchanged(before, model)


@given(st.sampled_from(["toml", "yaml", "json"]), st.text(max_size=60))
def test_fuzzed_plan_text_raises_plan_errors(registry: pruneplug.Registry, fmt: str, text: str) -> None:
    from pruneplug.plans import loads_plan

    try:
        loads_plan(text, fmt)
    except PlanError as error:
        assert str(error)


def test_a_tied_parameter_selected_twice_is_refused(registry: pruneplug.Registry) -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model[1].weight = model[0].weight
    for scope in ("local", "global"):
        rule = {"strategy": "l1_unstructured", "scope": scope, "types": ["Linear"], "params": {"amount": 0.5}}
        with pytest.raises(PlanError, match=r"rules\[0\]\.modules: 0\.weight and 1\.weight are one tied parameter"):
            apply_plan(model, {"rules": [rule]})
        assert not pruneplug.is_pruned(model)
    split = [{"strategy": "l1_unstructured", "modules": [name], "params": {"amount": 0.5}} for name in ("0", "1")]
    with pytest.raises(PlanError, match=r"rules\[1\]\.modules: 0\.weight and 1\.weight are one tied parameter"):
        apply_plan(model, {"rules": split})
    assert not pruneplug.is_pruned(model)
    rule = {"strategy": "l1_unstructured", "exclude": ["1"], "params": {"amount": 0.5}}
    apply_plan(model, {"rules": [rule, rule]})  # the same name twice is iterative pruning, not a tie
    assert pruneplug.is_pruned(model[0]) and not pruneplug.is_pruned(model[1])
