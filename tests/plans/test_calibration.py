"""A plan's calibration section: reading it, its schema, and data-aware rules applied through it."""

from __future__ import annotations

import functools
import importlib
import io
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from rich.console import Console
from torch import Tensor, nn

import pruneplug
from pruneplug.models import LeNet
from pruneplug.plans import (
    CalibrationSource,
    PlanError,
    PlanReport,
    apply_plan,
    dumps_plan,
    loads_plan,
    parse_plan,
    plan_schema,
    resolve_plan,
)

L1_RULE = {"strategy": "l1_unstructured", "params": {"amount": 0.5}}


def plan_with(calibration: object, *rules: dict[str, Any]) -> dict[str, Any]:
    return {"calibration": calibration, "rules": list(rules) or [L1_RULE]}


def test_the_section_reads_with_defaults(registry: pruneplug.Registry) -> None:
    plan = parse_plan(plan_with({"batches": "mypkg.data:calibration_batches"}))
    assert plan.calibration == CalibrationSource(batches="mypkg.data:calibration_batches")
    assert (plan.calibration.loss, plan.calibration.sequential, plan.calibration.blocks) == (None, True, None)
    full = {"batches": "a.b:c.d", "loss": "a.b:loss", "sequential": False, "blocks": ["h.0", "h.1"]}
    assert parse_plan(plan_with(full)).calibration == CalibrationSource(**full)  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", ["toml", "yaml", "json"])
def test_the_section_round_trips(registry: pruneplug.Registry, fmt: str) -> None:
    plan = parse_plan(plan_with({"batches": "a.b:c", "loss": "a.b:loss", "sequential": False, "blocks": "layers"}))
    assert loads_plan(dumps_plan(plan, fmt), fmt) == plan


@pytest.mark.parametrize(
    ("section", "field", "words"),
    [
        ({"batches": "mypkg.data"}, "calibration.batches", ["must be MODULE:FUNCTION", "got 'mypkg.data'"]),
        ({"batches": "a:b", "loss": "a:"}, "calibration.loss", ["must be MODULE:FUNCTION"]),
        ({"batches": 3}, "calibration.batches", ["must be a valid string"]),
        ({"batchs": "a:b"}, "calibration.batchs", ["unknown field 'batchs'", "Did you mean 'batches'?", "Fields: "]),
        ({"batches": "a:b", "sequential": "yes"}, "calibration.sequential", ["valid boolean"]),
        ("a:b", "calibration", ["CalibrationSource"]),
    ],
)
def test_a_bad_section_is_refused_when_read(
    registry: pruneplug.Registry, section: object, field: str, words: list[str]
) -> None:
    with pytest.raises(PlanError) as caught:
        parse_plan(plan_with(section), source="plan.toml")
    error = caught.value
    assert (error.rule, error.field) == (None, field), str(error)
    for word in words:
        assert word in str(error)


def test_an_unknown_field_of_a_section_lists_that_sections_fields(registry: pruneplug.Registry) -> None:
    """Not the plan's own fields: ``example_input.shap`` suggests ``shape`` among shape, dtype, low, high."""
    with pytest.raises(PlanError) as caught:
        parse_plan({"example_input": {"shap": [1]}, "rules": [L1_RULE]})
    assert "Did you mean 'shape'? Fields: shape, dtype, low, high" in str(caught.value)
    with pytest.raises(PlanError) as caught:
        parse_plan(plan_with({"batches": "a:b", "sequencial": True}))
    assert "Fields: batches, loss, sequential, blocks" in str(caught.value)


def test_the_schema_has_the_section(registry: pruneplug.Registry) -> None:
    schema = plan_schema()
    assert schema["properties"]["calibration"]["anyOf"][0] == {"$ref": "#/$defs/CalibrationSource"}
    section = schema["$defs"]["CalibrationSource"]
    assert section["required"] == ["batches"] and section["additionalProperties"] is False
    assert set(section["properties"]) == {"batches", "loss", "sequential", "blocks"}
    pattern = section["properties"]["batches"]["pattern"]
    assert pattern.startswith("^") and pattern.endswith("$")


# --- data-aware rules, applied ------------------------------------------------------------------

DATA = '''
import torch

def batches():
    """Three batches whose input features have unequal scales (data-aware scores then differ from |W|)."""
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(6, 8, generator=generator) * torch.logspace(-1, 1, 8) for _ in range(3)]

def generated():
    yield from batches()

def runner():
    def run(model):
        for batch in batches():
            model(batch)
    return run

def loss(output, batch):
    return output.square().mean()

def raises():
    raise ValueError("the dataset is not there")

def single():
    return batches()[0]

def number():
    return 3

def fails_at_the_second_batch():
    yield batches()[0]
    raise OSError("the disk went away")

def loss_raises(output, batch):
    raise KeyError("no labels")

def whole_output(output, batch):
    return output

def constant(output, batch):
    return torch.zeros((), requires_grad=True)

NOT_A_FUNCTION = [1, 2]
'''


class Block(nn.Module):
    """A residual MLP block."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 8)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.fc2(torch.relu(self.fc1(x)))


class Stack(nn.Module):
    """Two blocks in a ModuleList, then a head outside them."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Block(), Block()])
        self.head = nn.Linear(8, 4)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)


BLOCK_LAYERS = ["blocks.0.fc1", "blocks.0.fc2", "blocks.1.fc1", "blocks.1.fc2"]


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The module ``calib_plan_data`` (written to ``tmp_path``, put on ``sys.path``), imported."""
    (tmp_path / "calib_plan_data.py").write_text(DATA)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "calib_plan_data", raising=False)
    return importlib.import_module("calib_plan_data")


def stack() -> Stack:
    torch.manual_seed(0)
    return Stack()


def state(model: nn.Module) -> dict[str, Tensor]:
    return {key: value.clone() for key, value in model.state_dict().items()}


def same(model: nn.Module, before: dict[str, Tensor]) -> bool:
    now = model.state_dict()
    return now.keys() == before.keys() and all(torch.equal(now[key], value) for key, value in before.items())


def section(batches: str = "calib_plan_data:batches", **more: object) -> dict[str, object]:
    return {"batches": batches, **more}


def test_wanda_by_plan_is_prune_calibrated_on_the_rules_layers(registry: pruneplug.Registry, data: ModuleType) -> None:
    """No module filter: the layers prune_calibrated prunes by default (inside the blocks: not the head)."""
    model, reference = stack(), stack()
    report = apply_plan(model, {"calibration": section(), "rules": [{"strategy": "wanda", "params": {"amount": 0.5}}]})
    assert report.rules[0].tensors == tuple(f"{name}.weight" for name in BLOCK_LAYERS)
    assert report.rules[0].sparsity_after == 0.5 and not pruneplug.is_pruned(model.head)
    pruneplug.prune_calibrated(reference, "wanda", amount=0.5, calibration=data.batches(), progress=False)
    assert same(model, state(reference))
    plain = stack()  # what the data changed: not per-row magnitude
    for name in BLOCK_LAYERS:
        pruneplug.prune(plain.get_submodule(name), "weight", "magnitude", amount=0.5, compare="row")
    assert not same(model, state(plain))


def test_sparsegpt_by_plan_in_one_pass_on_selected_layers(registry: pruneplug.Registry, data: ModuleType) -> None:
    model, reference = stack(), stack()
    plan = {
        "calibration": section("calib_plan_data:generated", sequential=False),
        "rules": [{"strategy": "sparsegpt", "types": ["Linear"], "exclude": ["blocks.0.*"], "params": {"amount": 0.5}}],
    }
    report = apply_plan(model, plan)
    assert report.rules[0].tensors == ("blocks.1.fc1.weight", "blocks.1.fc2.weight", "head.weight")
    targets = ["blocks.1.fc1", "blocks.1.fc2", "head"]
    pruneplug.prune_calibrated(
        reference,
        "sparsegpt",
        amount=0.5,
        calibration=data.batches(),
        targets=targets,
        sequential=False,
        progress=False,
    )
    assert same(model, state(reference))
    assert not torch.equal(model.head.weight_orig, stack().head.weight)  # the kept weights were updated


def test_rules_run_one_prune_calibrated_each_in_order(registry: pruneplug.Registry, data: ModuleType) -> None:
    """The second rule calibrates on the model the first left; a generator is read once for both."""
    model, reference = stack(), stack()
    plan = {
        "calibration": section("calib_plan_data:generated"),
        "rules": [
            {"strategy": "wanda", "modules": ["blocks.0.*"], "params": {"amount": 0.5}},
            {"strategy": "sparsegpt", "modules": ["blocks.*"], "params": {"keep_n": 2, "of_m": 4}},
        ],
    }
    apply_plan(model, plan)
    batches = data.batches()
    calibrate = functools.partial(pruneplug.prune_calibrated, reference, calibration=batches, progress=False)
    calibrate("wanda", amount=0.5, targets=BLOCK_LAYERS[:2])
    calibrate("sparsegpt", amount=None, targets=BLOCK_LAYERS, keep_n=2, of_m=4)
    assert same(model, state(reference))


def test_a_callable_run_and_batches_given_in_python(registry: pruneplug.Registry, data: ModuleType) -> None:
    rules = [{"strategy": "wanda", "params": {"amount": 0.25}}]
    by_run, by_list = stack(), stack()
    apply_plan(by_run, {"calibration": section("calib_plan_data:runner"), "rules": rules})
    apply_plan(by_list, {"rules": rules}, calibration=data.batches())  # no section: the batches given
    assert same(by_run, state(by_list)) and pruneplug.is_pruned(by_run)


def test_a_taylor_rule_takes_its_gradients_from_the_plans_loss(registry: pruneplug.Registry, data: ModuleType) -> None:
    """With a loss, taylor runs on calibration data; without one it reads .grad, as before (here: none)."""
    rule = {"strategy": "scored_unstructured", "modules": ["blocks.*"], "params": {"amount": 0.5, "score": "taylor"}}
    model, reference = stack(), stack()
    apply_plan(model, {"calibration": section(loss="calib_plan_data:loss"), "rules": [rule]})
    pruneplug.prune_calibrated(
        reference,
        "scored_unstructured",
        amount=0.5,
        score="taylor",
        calibration=data.batches(),
        loss=data.loss,
        targets=BLOCK_LAYERS,
        progress=False,
    )
    assert same(model, state(reference))
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(PlanError, match="gradient"):
        apply_plan(stack(), {"calibration": section(), "rules": [rule]})


def test_which_rules_run_on_calibration_data(registry: pruneplug.Registry, data: ModuleType) -> None:
    plan = parse_plan(
        {
            "calibration": section(),
            "rules": [
                {"strategy": "wanda", "modules": ["blocks.*"], "params": {"amount": 0.5}},
                {"strategy": "magnitude", "modules": ["blocks.*"], "params": {"amount": 0.1}},
                {"strategy": "scored_unstructured", "modules": ["head"], "params": {"amount": 0.1, "score": "taylor"}},
            ],
        }
    )
    why = [rule.calibrated for rule in resolve_plan(stack(), plan)]
    assert why[0] is not None and "input_sq_norms" in why[0]
    assert why[1:] == [None, None]  # magnitude needs no statistics; taylor without a loss reads .grad


def test_a_later_failure_puts_back_the_weights_sparsegpt_updated(
    registry: pruneplug.Registry, data: ModuleType
) -> None:
    model = stack()
    before = state(model)
    plan = {
        "calibration": section(),
        "rules": [
            {"strategy": "sparsegpt", "params": {"amount": 0.5}},
            {"strategy": "l1_unstructured", "modules": ["blocks.0.fc1"], "params": {"amount": 100}},  # 64 left
        ],
    }
    with pytest.raises(PlanError) as caught:
        apply_plan(model, plan)
    assert (caught.value.rule, caught.value.field) == (1, "params.amount")
    assert same(model, before) and not pruneplug.is_pruned(model)


def test_a_dry_run_puts_back_the_weights_sparsegpt_updated(registry: pruneplug.Registry, data: ModuleType) -> None:
    model = stack()
    before = state(model)
    preview = apply_plan(
        model, {"calibration": section(), "rules": [{"strategy": "sparsegpt", "params": {"amount": 0.5}}]}, dry_run=True
    )
    assert preview.rules[0].sparsity_after == 0.5
    assert same(model, before) and not pruneplug.is_pruned(model)


@pytest.mark.parametrize(
    ("batches", "words"),
    [
        ("calib_plan_data_missing:batches", ["cannot import 'calib_plan_data_missing'"]),
        ("calib_plan_data:bathces", ["has no attribute 'bathces'", "Did you mean 'batches'?"]),
        ("calib_plan_data:NOT_A_FUNCTION", ["is a list, not a function"]),
        ("calib_plan_data:raises", ["calling raises() raised ValueError: the dataset is not there"]),
        ("calib_plan_data:single", ["returned a Tensor (a single batch"]),
        ("calib_plan_data:number", ["returned a int", "iterable of batches"]),
    ],
)
def test_a_source_that_does_not_give_batches_is_refused_before_anything_is_pruned(
    registry: pruneplug.Registry, data: ModuleType, batches: str, words: list[str]
) -> None:
    model = stack()
    before = state(model)
    plan = {
        "calibration": section(batches),
        "rules": [
            {"strategy": "l1_unstructured", "params": {"amount": 0.5}},
            {"strategy": "wanda", "params": {"amount": 0.5}},
        ],
    }
    with pytest.raises(PlanError) as caught:
        apply_plan(model, plan, source="plan.yaml")
    error = caught.value
    assert (error.rule, error.field) == (None, "calibration.batches")
    assert str(error).startswith(f"plan.yaml: calibration.batches: {batches!r}")
    for word in words:
        assert word in str(error)
    assert same(model, before) and not pruneplug.is_pruned(model)


def test_a_loss_that_is_not_a_function_is_refused(registry: pruneplug.Registry, data: ModuleType) -> None:
    rule = {"strategy": "scored_unstructured", "params": {"amount": 0.5, "score": "taylor"}}
    with pytest.raises(PlanError) as caught:
        apply_plan(stack(), {"calibration": section(loss="calib_plan_data:NOT_A_FUNCTION"), "rules": [rule]})
    assert caught.value.field == "calibration.loss" and "not a function" in str(caught.value)


def test_a_data_aware_rule_without_calibration_names_the_rule_and_strategy(registry: pruneplug.Registry) -> None:
    plan = {
        "rules": [
            {"strategy": "magnitude", "params": {"amount": 0.5}},
            {"strategy": "sparsegpt", "modules": ["blocks.*"], "params": {"amount": 0.5}},
        ]
    }
    model = stack()
    with pytest.raises(PlanError) as caught:
        apply_plan(model, plan, source="plan.toml")
    error = caught.value
    assert (error.rule, error.field) == (1, "strategy")
    assert str(error).startswith("plan.toml: rules[1].strategy: 'sparsegpt' runs on calibration data")
    assert "input_hessian" in str(error) and "calibration = { batches =" in str(error)
    assert not pruneplug.is_pruned(model)


def test_a_batch_that_fails_while_pruning_undoes_every_rule(registry: pruneplug.Registry, data: ModuleType) -> None:
    model = stack()
    before = state(model)
    plan = {
        "calibration": section("calib_plan_data:fails_at_the_second_batch"),
        "rules": [
            {"strategy": "l1_unstructured", "params": {"amount": 0.5}},
            {"strategy": "wanda", "params": {"amount": 0.5}},
        ],
    }
    with pytest.raises(PlanError) as caught:
        apply_plan(model, plan)
    assert (caught.value.rule, caught.value.field) == (1, "calibration.batches")
    assert "the disk went away" in str(caught.value)
    assert same(model, before) and not pruneplug.is_pruned(model)


@pytest.mark.parametrize(
    ("calibration", "rule", "field", "words"),
    [
        ({}, {"modules": ["head"]}, "modules", ["'head' lies outside the blocks", "calibration.sequential = false"]),
        ({}, {"tensors": ["bias"]}, "tensors", ["leave 'tensors' out"]),
        ({"blocks": "blokcs"}, {}, "calibration.blocks", ["Did you mean 'blocks'"]),
        ({"sequential": False}, {"types": ["ReLU", "Linear"], "modules": ["nothing*"]}, "modules[0]", ["nothing*"]),
    ],
)
def test_what_a_data_aware_rule_selects_is_checked_first(
    registry: pruneplug.Registry,
    data: ModuleType,
    calibration: dict[str, object],
    rule: dict[str, object],
    field: str,
    words: list[str],
) -> None:
    model = stack()
    plan = {"calibration": section(**calibration), "rules": [{"strategy": "wanda", "params": {"amount": 0.5}, **rule}]}
    with pytest.raises(PlanError) as caught:
        apply_plan(model, plan)
    assert caught.value.field == field, str(caught.value)
    for word in words:
        assert word in str(caught.value)
    assert not pruneplug.is_pruned(model)


def test_lenet_in_one_pass_only_its_linear_layers(registry: pruneplug.Registry) -> None:
    """A model without blocks: sequential = false; a rule that selects no linear layer is an error, or skipped."""
    model = LeNet()
    images = [torch.rand(4, 1, 28, 28) for _ in range(2)]
    plan = {
        "calibration": section("calib_plan_data:batches", sequential=False),
        "rules": [{"strategy": "wanda", "params": {"amount": 0.5}}],
    }
    report = apply_plan(model, plan, calibration=images)
    assert report.rules[0].tensors == ("fc1.weight", "fc2.weight", "fc3.weight")
    assert not pruneplug.is_pruned(model.conv1)
    convs = {**plan, "rules": [{"strategy": "wanda", "types": ["Conv2d"], "params": {"amount": 0.5}}]}
    with pytest.raises(PlanError, match="prune linear layers") as caught:
        apply_plan(LeNet(), convs, calibration=images)
    assert caught.value.field == "types"
    convs["rules"][0]["optional"] = True  # type: ignore[index]
    assert apply_plan(LeNet(), convs, calibration=images).rules[0].skipped is not None
    with pytest.raises(PlanError, match="calibration.sequential = false") as caught:
        apply_plan(LeNet(), {**plan, "calibration": section()}, calibration=images)
    assert caught.value.field == "calibration.sequential"


def test_a_global_rule_ranks_all_its_layers_in_one_pass(registry: pruneplug.Registry, data: ModuleType) -> None:
    model, reference = stack(), stack()
    rule = {
        "strategy": "wanda",
        "scope": "global",
        "modules": ["blocks.*"],
        "params": {"amount": 0.5, "compare": "tensor"},
    }
    apply_plan(model, {"calibration": section(), "rules": [rule]})  # sequential (the default) cannot rank globally
    pruneplug.prune_calibrated(
        reference,
        "wanda",
        amount=0.5,
        compare="tensor",
        scope="global",
        sequential=False,
        targets=BLOCK_LAYERS,
        calibration=data.batches(),
        progress=False,
    )
    assert same(model, state(reference))


def test_a_taylor_rule_needs_the_batches_not_a_run_function(registry: pruneplug.Registry, data: ModuleType) -> None:
    rule = {"strategy": "scored_unstructured", "modules": ["blocks.*"], "params": {"amount": 0.5, "score": "taylor"}}
    plan = {"calibration": section("calib_plan_data:runner", loss="calib_plan_data:loss"), "rules": [rule]}
    with pytest.raises(PlanError, match="return the batches") as caught:
        apply_plan(stack(), plan)
    assert (caught.value.rule, caught.value.field) == (0, "calibration.batches")


class Spare(Stack):
    """A Stack with a ModuleList of blocks its forward never calls."""

    def __init__(self) -> None:
        super().__init__()
        self.spare = nn.ModuleList([Block(), Block()])


TAYLOR = {"strategy": "scored_unstructured", "modules": ["blocks.*"], "params": {"amount": 0.5, "score": "taylor"}}


@pytest.mark.parametrize(
    ("calibration", "rule", "field", "words"),
    [
        ({"loss": "calib_plan_data:loss_raises"}, TAYLOR, "calibration.loss", ["raised KeyError", "'no labels'"]),
        ({"loss": "calib_plan_data:whole_output"}, TAYLOR, "calibration.loss", ["must return a scalar tensor"]),
        ({"loss": "calib_plan_data:constant"}, TAYLOR, "calibration.loss", ["no gradient reached 'blocks.0.fc1'"]),
        ({"batches": "calib_plan_data:fails_at_the_second_batch"}, TAYLOR, "calibration.batches", ["disk went away"]),
        (
            {"blocks": "spare"},
            {"strategy": "wanda", "modules": ["spare.*"], "params": {"amount": 0.5}},
            "calibration.blocks",
            ["without calling block 'spare.0'"],
        ),
    ],
)
def test_a_calibration_failure_names_the_field_at_fault_by_its_type(
    registry: pruneplug.Registry,
    data: ModuleType,
    calibration: dict[str, object],
    rule: dict[str, object],
    field: str,
    words: list[str],
) -> None:
    """The loss's errors name calibration.loss, the batches' calibration.batches, the blocks' calibration.blocks."""
    model = Spare()
    before = state(model)
    plan = {
        "calibration": {**section(loss="calib_plan_data:loss"), **calibration},
        "rules": [{"strategy": "l1_unstructured", "modules": ["head"], "params": {"amount": 0.5}}, rule],
    }
    with pytest.raises(PlanError) as caught:
        apply_plan(model, plan, source="plan.toml")
    assert (caught.value.rule, caught.value.field) == (1, field), str(caught.value)
    assert str(caught.value).startswith(f"plan.toml: rules[1].{field}: ")
    for word in words:
        assert word in str(caught.value)
    assert same(model, before) and not pruneplug.is_pruned(model)


# --- the calibration reports in the plan's report ------------------------------------------------


def test_the_report_carries_each_data_aware_rules_calibration_report(
    registry: pruneplug.Registry, data: ModuleType
) -> None:
    """Rule 1 (wanda, block by block) and rule 2 (global wanda, one pass) have one; rule 0 (l1) has none."""
    model, reference = stack(), stack()
    plan = {
        "calibration": section(),
        "rules": [
            {"strategy": "l1_unstructured", "modules": ["head"], "params": {"amount": 0.25}},
            {"strategy": "wanda", "modules": ["blocks.0.*"], "params": {"amount": 0.5}},
            {
                "strategy": "wanda",
                "scope": "global",
                "modules": ["blocks.1.*"],
                "params": {"amount": 0.5, "compare": "tensor"},
            },
        ],
    }
    report = apply_plan(model, plan)
    assert sorted(report.calibration) == [1, 2]
    pruneplug.prune(reference.head, "weight", "l1_unstructured", amount=0.25)
    expected = pruneplug.prune_calibrated(
        reference, "wanda", amount=0.5, calibration=data.batches(), targets=BLOCK_LAYERS[:2], progress=False
    )
    wanda = report.calibration[1]
    assert wanda.strategy == "wanda" and wanda.layers == expected.layers
    assert [(b.name, b.relative_error) for b in wanda.blocks] == [(b.name, b.relative_error) for b in expected.blocks]
    assert (wanda.batches, wanda.rows) == (3, 18) and wanda.seconds > 0
    assert report.calibration[2].blocks == () and list(report.calibration[2].layers) == BLOCK_LAYERS[2:]


def test_the_calibration_reports_are_in_the_json_markdown_and_tables(
    registry: pruneplug.Registry, data: ModuleType
) -> None:
    plan = {"calibration": section(), "rules": [{"strategy": "wanda", "params": {"amount": 0.5}}]}
    report = apply_plan(stack(), plan, dry_run=True)  # a dry run reports what calibrating gave, too
    cal = report.calibration[0]
    data_ = json.loads(report.to_json())
    assert data_["calibration"] == {"0": cal.to_dict()}
    assert data_["calibration"]["0"]["layers"]["blocks.1.fc2"]["sparsity"] == 0.5
    assert [b["name"] for b in data_["calibration"]["0"]["blocks"]] == ["blocks.0", "blocks.1"]
    assert PlanReport.model_validate_json(report.to_json()) == report
    worst = max(cal.blocks, key=lambda block: block.relative_error)
    markdown = report.to_markdown()
    assert "| rule | strategy | layers | blocks | worst block error | batches | rows | seconds |" in markdown
    assert f"| 0 | wanda | 4 | 2 | {worst.relative_error:.4f} ({worst.name}) | 3 | 18 |" in markdown
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(report.to_rich(tensors=False))
    text = console.export_text()
    assert "Calibration" in text and f"{worst.relative_error:.4f} ({worst.name})" in text
    plain = apply_plan(stack(), {"rules": [L1_RULE]})
    assert plain.calibration == {} and json.loads(plain.to_json())["calibration"] == {}
    assert "worst block error" not in plain.to_markdown()


# --- OWL: per-block amounts from a rule ---------------------------------------------------------

OWL_RULE = {"strategy": "wanda", "allocation": "owl", "owl_threshold": 3, "owl_spread": 0.1, "params": {"amount": 0.5}}


@pytest.mark.parametrize("fmt", ["toml", "yaml", "json"])
def test_an_owl_rule_reads_and_round_trips(registry: pruneplug.Registry, fmt: str) -> None:
    plan = parse_plan(plan_with(section(), OWL_RULE))
    rule = plan.rules[0]
    assert (rule.allocation, rule.owl_threshold, rule.owl_spread) == ("owl", 3, 0.1)
    assert loads_plan(dumps_plan(plan, fmt), fmt) == plan
    assert parse_plan(plan_with(section(), {"strategy": "wanda", "params": {"amount": 0.5}})).rules[0].allocation == (
        "uniform"
    )


def test_the_schema_has_the_allocation_fields(registry: pruneplug.Registry) -> None:
    schema = plan_schema()
    mapping = schema["properties"]["rules"]["items"]["discriminator"]["mapping"]
    wanda = schema["$defs"][mapping["wanda"].rpartition("/")[2]]["properties"]
    assert wanda["allocation"]["enum"] == ["uniform", "owl"] and wanda["allocation"]["default"] == "uniform"
    assert {"type": "number", "exclusiveMinimum": 0} in wanda["owl_threshold"]["anyOf"]
    assert {"type": "number", "minimum": 0, "maximum": 1} in wanda["owl_spread"]["anyOf"]


@pytest.mark.parametrize(
    ("rule", "field", "words"),
    [
        ({"strategy": "l1_unstructured"}, "allocation", ["only for a rule that runs on calibration data", "'l1_"]),
        (
            {"strategy": "ln_structured", "channels": True, "params": {"amount": 0.5, "n": 1}},
            "allocation",
            ["only for a rule that runs on calibration data"],
        ),
        (
            {"scope": "global", "params": {"amount": 0.5, "compare": "tensor"}},
            "allocation",
            ["scope 'global' ranks", "one amount"],
        ),
        ({"params": {"keep_n": 2, "of_m": 4}}, "allocation", ["needs params.amount"]),
        ({"params": {"amount": 3}}, "params.amount", ["a fraction", "got 3"]),
        ({"allocation": "owls"}, "allocation", ["must be 'uniform' or 'owl', got 'owls'"]),
        ({"allocation": "uniform"}, "owl_threshold", ["only applies with allocation = 'owl'"]),
        ({"owl_threshold": 0}, "owl_threshold", ["must be greater than 0, got 0"]),
        ({"owl_threshold": "5"}, "owl_threshold", ["must be a number, got '5'"]),
        ({"owl_spread": 1.5}, "owl_spread", ["must be less than or equal to 1, got 1.5"]),
    ],
)
def test_a_bad_allocation_names_the_rule_and_field(
    registry: pruneplug.Registry, rule: dict[str, Any], field: str, words: list[str]
) -> None:
    with pytest.raises(PlanError) as caught:
        parse_plan(plan_with(section(), L1_RULE, {**OWL_RULE, **rule}), source="plan.toml")
    assert (caught.value.rule, caught.value.field) == (1, field), str(caught.value)
    for word in words:
        assert word in str(caught.value)


def test_owl_on_a_taylor_rule_without_a_loss_is_refused_when_resolved(registry: pruneplug.Registry) -> None:
    """With the plan's loss, taylor runs on calibration data and OWL applies; without one it does not."""
    rule = {**TAYLOR, "allocation": "owl"}
    assert parse_plan(plan_with(section(loss="calib_plan_data:loss"), rule)).rules[0].allocation == "owl"
    with pytest.raises(PlanError) as caught:
        resolve_plan(stack(), parse_plan(plan_with(section(), rule)))
    assert (caught.value.rule, caught.value.field) == (0, "allocation")
    assert "only for a rule that runs on calibration data" in str(caught.value)


@pytest.mark.parametrize("sequential", [True, False])
def test_an_owl_rule_is_prune_calibrated_with_owl(
    registry: pruneplug.Registry, data: ModuleType, sequential: bool
) -> None:
    model, reference = stack(), stack()
    report = apply_plan(model, {"calibration": section(sequential=sequential), "rules": [OWL_RULE]})
    expected = pruneplug.prune_calibrated(
        reference,
        "wanda",
        amount=0.5,
        calibration=data.batches(),
        sequential=sequential,
        allocation="owl",
        owl_threshold=3,
        owl_spread=0.1,
        progress=False,
    )
    assert same(model, state(reference))
    amounts = {name: layer.amount for name, layer in report.calibration[0].layers.items()}
    assert amounts == {name: layer.amount for name, layer in expected.layers.items()}
    assert list(amounts) == BLOCK_LAYERS and len(set(amounts.values())) == 2  # a sparsity per block
    assert abs(sum(amounts.values()) / len(amounts) - 0.5) < 1e-9


def test_an_owl_rule_in_one_pass_prunes_layers_inside_the_blocks_only(
    registry: pruneplug.Registry, data: ModuleType
) -> None:
    plan = {"calibration": section(sequential=False), "rules": [{**OWL_RULE, "types": ["Linear"]}]}
    with pytest.raises(PlanError) as caught:
        apply_plan(stack(), plan)
    assert (caught.value.rule, caught.value.field) == (0, "modules")
    assert "'head' lies outside the blocks" in str(caught.value) and "allocation = 'owl'" in str(caught.value)
    with pytest.raises(PlanError) as caught:
        apply_plan(LeNet(), plan, calibration=[torch.rand(2, 1, 28, 28)])
    assert (caught.value.rule, caught.value.field) == (0, "allocation"), str(caught.value)
    assert "calibration.blocks" in str(caught.value)
