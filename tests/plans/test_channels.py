"""Channel rules (``channels = true``), the plan's example input, and compaction (``compact = true``)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

import pruneplug
from pruneplug.models import LeNet
from pruneplug.plans import (
    ExampleInput,
    PlanError,
    PlanReport,
    apply_plan,
    dumps_plan,
    example_tensor,
    loads_plan,
    parse_plan,
)
from pruneplug.testing import assert_unchanged, snapshot

LENET_INPUT = {"shape": [1, 1, 28, 28]}


def channel_rule(**fields: Any) -> dict[str, Any]:
    return {"strategy": "ln_structured", "channels": True, "params": {"amount": 0.5, "n": 2}, **fields}


def plan(*rules: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"example_input": LENET_INPUT, **fields, "rules": list(rules)}


def masks(model: nn.Module) -> dict[str, Tensor]:
    return {k: v for k, v in model.state_dict().items() if k.endswith("_mask")}


def twins() -> tuple[LeNet, LeNet]:
    first, second = LeNet(), LeNet()
    second.load_state_dict(first.state_dict())
    return first, second


class Residual(nn.Module):
    """A stem, one residual block and a head: the stream (stem, block.b) is one channel group."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block = nn.ModuleDict({"a": nn.Conv2d(8, 6, 3, padding=1), "b": nn.Conv2d(6, 8, 3, padding=1)})
        self.head = nn.Linear(8, 4)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.stem(x))
        x = x + self.block["b"](torch.relu(self.block["a"](x)))
        out: Tensor = self.head(x.mean(dim=(2, 3)))
        return out


RESIDUAL_INPUT = {"shape": [2, 3, 8, 8]}


def pruned_channels(model: nn.Module, name: str) -> int:
    """Output channels of ``name`` whose weight rows are all masked."""
    mask = dict(model.named_buffers()).get(f"{name}.weight_mask")
    if mask is None:
        return 0
    return int((~mask.flatten(1).any(1)).sum())


# -- the plan's fields ---------------------------------------------------------------------------


def test_a_channel_rule_and_its_fields(registry: pruneplug.Registry) -> None:
    parsed = parse_plan(
        plan(channel_rule(types=["Conv2d"], scope="global", round_to=2, group_reduction="max"), compact=True)
    )
    (rule,) = parsed.rules
    assert (rule.channels, rule.scope, rule.round_to, rule.group_reduction) == (True, "global", 2, "max")
    assert parsed.compact and parsed.example_input == ExampleInput(shape=(1, 1, 28, 28))
    for fmt in ("toml", "yaml", "json"):  # the new fields survive every format
        assert loads_plan(dumps_plan(parsed, fmt), fmt) == parsed


@pytest.mark.parametrize(
    ("rule", "field", "words"),
    [
        (channel_rule(tensors=["weight"]), "tensors", ["leave 'tensors' out"]),
        (channel_rule(params={"amount": 0.5, "n": 2, "dim": 0}), "params.dim", ["takes no 'dim'"]),
        (channel_rule(params={"amount": 0.5, "n": 2, "prune_bias": True}), "params.prune_bias", ["takes no"]),
        (
            channel_rule(strategy="l1_unstructured", params={"amount": 0.5}),
            "strategy",
            ["kind 'structured'", "'l1_unstructured' is unstructured"],
        ),
        (channel_rule(strategy="nm_2_4_ish"), "strategy", ["no strategy named 'nm_2_4_ish'"]),
        (channel_rule(round_to=0), "round_to", ["greater than or equal to 1"]),
        (channel_rule(group_reduction="median"), "group_reduction", ["'mean', 'sum', 'max' or 'min'"]),
        (
            {"strategy": "ln_structured", "round_to": 8, "params": {"amount": 1, "n": 2, "dim": 0}},
            "round_to",
            ["only applies to a channel rule"],
        ),
        (
            {"strategy": "ln_structured", "group_reduction": "sum", "params": {"amount": 1, "n": 2, "dim": 0}},
            "group_reduction",
            ["only applies to a channel rule"],
        ),
        (
            {"strategy": "ln_structured", "scope": "global", "params": {"amount": 1, "n": 2, "dim": 0}},
            "scope",
            ["channels = true to rank whole channel groups globally"],
        ),
    ],
)
def test_bad_channel_rules_name_the_field(
    registry: pruneplug.Registry, rule: dict[str, Any], field: str, words: list[str]
) -> None:
    with pytest.raises(PlanError) as caught:
        parse_plan(plan(rule), source="plan.toml")
    assert (caught.value.rule, caught.value.field) == (0, field), str(caught.value)
    for word in words:
        assert word in str(caught.value)
    assert str(caught.value).startswith(f"plan.toml: rules[0].{field}: ")


def test_every_problem_of_a_channel_rule_is_listed(registry: pruneplug.Registry) -> None:
    bad = channel_rule(strategy="l1_unstructured", tensors=["weight"], params={"amount": 0.5, "dim": 0})
    with pytest.raises(PlanError) as caught:
        parse_plan(plan(bad))
    assert [location for location, _ in caught.value.problems] == [
        "rules[0].strategy",
        "rules[0].tensors",
        "rules[0].params.dim",  # unknown to l1_unstructured: said once, as such
    ]
    assert "unknown parameter 'dim'" in caught.value.problems[2][1]


@pytest.mark.parametrize(
    ("example", "field", "words"),
    [
        ({"shape": []}, "example_input.shape", ["at least 1 item"]),
        ({"shape": [1, 0, 4]}, "example_input.shape[1]", ["greater than 0"]),
        ({"shape": [1, -3]}, "example_input.shape[1]", ["greater than 0"]),
        ({"shape": "1,3,224,224"}, "example_input.shape", ["must be a list"]),
        ({"shape": [1, 2.5]}, "example_input.shape[1]", ["integer"]),
        ({"shape": [1, True]}, "example_input.shape[1]", ["integer"]),
        ({"shape": [100_000, 100_000]}, "example_input", ["10,000,000,000 entries", "268,435,456"]),
        ({"shape": [1] * 9}, "example_input.shape", ["at most 8"]),
        ({"shape": [4], "dtype": "uint8"}, "example_input.dtype", ["'float32'", "got 'uint8'"]),
        ({"shape": [4], "dtype": "int64", "high": 2.5}, "example_input", ["whole number", "2.5"]),
        ({"shape": [4], "low": 1, "high": 1}, "example_input", ["low must be less than high"]),
        ({"shape": [4], "high": float("inf")}, "example_input", ["finite"]),
        ({"shape": [4], "size": 3}, "example_input.size", ["unknown field 'size'"]),
        ({"dtype": "float32"}, "example_input.shape", ["missing required field 'shape'"]),
    ],
)
def test_bad_example_inputs_name_the_field(
    registry: pruneplug.Registry, example: dict[str, Any], field: str, words: list[str]
) -> None:
    with pytest.raises(PlanError) as caught:
        parse_plan({"example_input": example, "rules": [{"strategy": "identity"}]}, source="plan.yaml")
    assert caught.value.field == field and caught.value.rule is None, str(caught.value)
    for word in words:
        assert word in str(caught.value), str(caught.value)


def test_the_example_tensor_is_the_same_every_time_and_leaves_the_global_generator_alone() -> None:
    spec = ExampleInput(shape=(3, 5), low=-2, high=2.5)
    state = torch.get_rng_state()
    first = example_tensor(spec)
    assert torch.equal(first, example_tensor(spec)) and torch.equal(state, torch.get_rng_state())
    assert first.dtype == torch.float32 and bool((first >= -2).all() and (first < 2.5).all())
    ids = example_tensor(ExampleInput(shape=(2, 50), dtype="int32", low=3, high=7))
    assert ids.dtype == torch.int32 and set(ids.unique().tolist()) == {3, 4, 5, 6}
    assert example_tensor(ExampleInput(shape=(4,), dtype="int64")).eq(0).all()  # default range [0, 1)
    assert example_tensor(ExampleInput(shape=(2,), dtype="bfloat16")).dtype == torch.bfloat16


# -- which channels a rule prunes ----------------------------------------------------------------


def test_a_channel_rule_does_what_prune_channels_does(registry: pruneplug.Registry) -> None:
    planned, by_hand = twins()
    result = apply_plan(planned, plan(channel_rule(types=["Conv2d"])))
    x = example_tensor(ExampleInput(shape=(1, 1, 28, 28)))
    pruneplug.prune_channels(by_hand, "ln_structured", amount=0.5, n=2, example_inputs=x, ignore=["fc2"])
    assert (
        masks(planned).keys()
        == masks(by_hand).keys()
        == {f"{name}_mask" for name in ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight")}
    )
    for key, mask in masks(planned).items():
        assert torch.equal(mask, masks(by_hand)[key]), key
    (rule,) = result.rules
    assert rule.tensors == ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight")
    assert (pruned_channels(planned, "conv1"), pruned_channels(planned, "conv2")) == (3, 8)
    assert rule.newly_pruned > 0 and rule.sparsity_before == 0
    assert isinstance(result, PlanReport) and result.compaction is None


def test_a_module_s_channels_are_its_outputs_not_its_inputs(registry: pruneplug.Registry) -> None:
    model = LeNet()
    apply_plan(model, plan(channel_rule(modules=["fc1"])))
    assert pruned_channels(model, "fc1") == 60
    assert pruned_channels(model, "conv2") == 0  # fc1's input channels are conv2's outputs: not selected
    assert not bool(model.fc2.weight_mask[:, :].all())  # fc2's input columns follow fc1's outputs


def test_a_residual_stream_is_pruned_when_any_module_writing_it_is_selected(registry: pruneplug.Registry) -> None:
    model = Residual()
    apply_plan(model, plan(channel_rule(modules=["block.b"]), example_input=RESIDUAL_INPUT))
    assert pruned_channels(model, "block.b") == pruned_channels(model, "stem") == 4  # one group: the stream
    assert pruned_channels(model, "block.a") == 0
    assert not bool(model.head.weight_mask.all())  # the head reads the stream: its columns follow


def test_exclude_leaves_every_group_an_excluded_module_touches(registry: pruneplug.Registry) -> None:
    model = Residual()
    apply_plan(model, plan(channel_rule(types=["Conv2d"], exclude=["head"]), example_input=RESIDUAL_INPUT))
    assert pruned_channels(model, "block.a") == 3
    assert pruned_channels(model, "stem") == pruned_channels(model, "block.b") == 0  # the head reads the stream
    assert not pruneplug.is_pruned(model.head)


def test_a_rule_whose_modules_own_no_prunable_channels(registry: pruneplug.Registry) -> None:
    model = LeNet()
    with pytest.raises(PlanError) as caught:
        apply_plan(model, plan(channel_rule(modules=["fc3"])))
    assert (caught.value.rule, caught.value.field) == (0, "modules")
    assert "fc3.weight: it reaches the model's outputs" in str(caught.value)
    skipped = apply_plan(model, plan(channel_rule(modules=["fc3"], optional=True)))
    assert skipped.rules[0].skipped is not None and "model's outputs" in skipped.rules[0].skipped
    with pytest.raises(PlanError, match=r"rules\[0\]\.modules: .*#0 conv1.weight: conv2 is excluded"):
        apply_plan(model, plan(channel_rule(modules=["conv1"], exclude=["conv2"])))
    assert not pruneplug.is_pruned(model)


@pytest.mark.parametrize("scope", ["local", "global"])
def test_a_group_between_two_selected_ones_is_left_alone(registry: pruneplug.Registry, scope: str) -> None:
    """conv1's and fc1's outputs, not conv2's -- though conv2 and fc1, all it touches, are pruned too."""
    model = LeNet()
    apply_plan(model, plan(channel_rule(modules=["conv1", "fc1"], scope=scope)))
    assert (pruned_channels(model, "conv1"), pruned_channels(model, "conv2"), pruned_channels(model, "fc1")) == (
        3,
        0,
        60,
    )


def test_global_scope_round_to_and_reductions_reach_prune_channels(registry: pruneplug.Registry) -> None:
    planned, by_hand = twins()
    rule = channel_rule(types=["Conv2d", "Linear"], scope="global", round_to=2, group_reduction="max")
    apply_plan(planned, plan(rule))
    x = example_tensor(ExampleInput(shape=(1, 1, 28, 28)))
    pruneplug.prune_channels(
        by_hand, "ln_structured", amount=0.5, n=2, example_inputs=x, scope="global", round_to=2, group_reduction="max"
    )
    assert masks(planned).keys() == masks(by_hand).keys()
    for key, mask in masks(planned).items():
        assert torch.equal(mask, masks(by_hand)[key]), key


def test_channel_rules_and_tensor_rules_stack(registry: pruneplug.Registry) -> None:
    model = LeNet()
    result = apply_plan(
        model,
        plan(
            channel_rule(types=["Conv2d"]),
            {"strategy": "l1_unstructured", "types": ["Linear"], "params": {"amount": 0.5}},
            channel_rule(modules=["fc1"], params={"amount": 10, "n": 1}),
        ),
    )
    assert [len(pruneplug.pruning_history(model.fc1, "weight"))] == [3]
    assert pruned_channels(model, "fc1") >= 10 and result.rules[2].sparsity_after > result.rules[2].sparsity_before


# -- example inputs ------------------------------------------------------------------------------


def test_a_channel_rule_needs_an_example_input(registry: pruneplug.Registry) -> None:
    model = LeNet()
    data = {"rules": [{"strategy": "identity"}, channel_rule(types=["Conv2d"])]}
    with pytest.raises(PlanError) as caught:
        apply_plan(model, data, source="plan.toml")
    assert (caught.value.rule, caught.value.field) == (None, "example_input")
    assert str(caught.value).startswith("plan.toml: example_input: rules[1] prunes channels")
    assert not pruneplug.is_pruned(model)
    given = torch.rand(2, 1, 28, 28)
    apply_plan(model, data, example_inputs=given)  # given in Python instead
    assert pruned_channels(model, "conv2") == 8


def test_an_example_input_the_model_does_not_run_on(registry: pruneplug.Registry) -> None:
    model = LeNet()
    with pytest.raises(PlanError) as caught:
        apply_plan(model, plan(channel_rule(), example_input={"shape": [1, 3, 28, 28]}))
    assert caught.value.field == "example_input"
    assert "cannot trace the model on example_input [1, 3, 28, 28] float32" in str(caught.value)
    assert isinstance(caught.value.__cause__, pruneplug.ChannelTraceError)
    assert not pruneplug.is_pruned(model)


def test_token_ids_as_the_example_input(registry: pruneplug.Registry) -> None:
    model = nn.Sequential(nn.Embedding(50, 16), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    tokens = {"shape": [2, 7], "dtype": "int64", "high": 50}
    result = apply_plan(model, plan(channel_rule(types=["Linear"]), example_input=tokens, compact=True))
    assert model[1].out_features == 16 and model[3].in_features == 16
    assert result.compaction is not None and result.compaction.params_after < result.compaction.params_before


# -- compaction ----------------------------------------------------------------------------------


def test_compact_removes_the_pruned_channels_and_reports_it(registry: pruneplug.Registry) -> None:
    compacted, masked = twins()
    x = example_tensor(ExampleInput(shape=(1, 1, 28, 28)))
    result = apply_plan(compacted, plan(channel_rule(types=["Conv2d"]), compact=True))
    apply_plan(masked, plan(channel_rule(types=["Conv2d"])))
    assert (compacted.conv1.out_channels, compacted.conv2.in_channels, compacted.conv2.out_channels) == (3, 3, 8)
    assert compacted.fc1.in_features == 8 * 4 * 4 and not pruneplug.is_pruned(compacted)
    torch.testing.assert_close(compacted(x), masked(x), rtol=1e-4, atol=1e-5)
    report = result.compaction
    assert report is not None and report.params_after == pruneplug.count_params(compacted) < report.params_before
    assert report.macs_after == pruneplug.count_macs(compacted, x) < report.macs_before
    assert report.groups_compacted == 2 and report.total_channels_removed == 3 + 8
    assert result.totals.parameters == report.params_after  # the sparsity report describes the compacted model
    assert '"compaction": {' in result.to_json() and "| parameters |" in result.to_markdown()


def test_compact_can_be_asked_for_by_the_caller(registry: pruneplug.Registry) -> None:
    model = LeNet()
    result = apply_plan(model, plan(channel_rule(types=["Conv2d"])), compact=True)
    assert result.compaction is not None and model.conv1.out_channels == 3
    kept = LeNet()
    assert apply_plan(kept, plan(channel_rule(types=["Conv2d"]), compact=True), compact=False).compaction is None
    assert kept.conv1.out_channels == 6


def test_compact_needs_an_example_input(registry: pruneplug.Registry) -> None:
    model = LeNet()
    data = {"compact": True, "rules": [{"strategy": "l1_unstructured", "params": {"amount": 0.5}}]}
    with pytest.raises(PlanError) as caught:
        apply_plan(model, data)
    assert caught.value.field == "example_input" and "compacting runs the model" in str(caught.value)
    assert not pruneplug.is_pruned(model)


def test_a_dry_run_compacts_then_puts_everything_back(registry: pruneplug.Registry) -> None:
    model = LeNet()
    data = plan(channel_rule(types=["Conv2d"], params={"amount": 0.5}, strategy="random_structured"), compact=True)
    before, rng = snapshot(model), torch.get_rng_state()
    dry = apply_plan(model, data, dry_run=True)
    assert_unchanged(before, model)
    assert torch.equal(rng, torch.get_rng_state())
    assert model.conv1.out_channels == 6 and model.conv1.weight.shape == (6, 1, 5, 5)
    real = apply_plan(model, data)
    assert dry.compaction is not None and real.compaction is not None
    assert dry.compaction.model_dump(exclude={"tolerance"}) == real.compaction.model_dump(exclude={"tolerance"})
    assert dry.rules == real.rules and dry.totals == real.totals


class HardCoded(LeNet):
    """LeNet whose forward flattens to a hard-coded width: its convolutions cannot be compacted."""

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(torch.relu(self.conv1(x)))
        x = self.maxpool(torch.relu(self.conv2(x)))
        x = torch.relu(self.fc1(x.reshape(-1, 256)))
        out: Tensor = self.fc3(torch.relu(self.fc2(x)))
        return out


def test_a_failed_compaction_rolls_back_every_rule(registry: pruneplug.Registry) -> None:
    model = HardCoded()
    pruneplug.prune(model.fc3, "weight", "l1_unstructured", amount=7)  # pruned already: kept as it was
    before, rng = snapshot(model), torch.get_rng_state()
    with pytest.raises(PlanError) as caught:
        apply_plan(model, plan(channel_rule(types=["Conv2d"]), compact=True))
    assert (caught.value.rule, caught.value.field) == (None, "compact")
    assert str(caught.value).startswith("compact: the compaction failed: ")
    assert isinstance(caught.value.__cause__, pruneplug.CompactionError)
    assert_unchanged(before, model)
    assert torch.equal(rng, torch.get_rng_state())


def test_a_failing_rule_after_a_channel_rule_rolls_it_back(registry: pruneplug.Registry) -> None:
    model = LeNet()
    before = snapshot(model)
    data = plan(
        channel_rule(types=["Conv2d", "Linear"]),
        channel_rule(modules=["conv1"], params={"amount": 3, "n": 2}),  # 3 of the 3 left: would empty the group
    )
    with pytest.raises(PlanError) as caught:
        apply_plan(model, data)
    assert (caught.value.rule, caught.value.field) == (1, "params.amount")
    assert isinstance(caught.value.__cause__, pruneplug.InvalidAmountError)
    assert_unchanged(before, model)
