"""pruneplug.Pruner: pruning to a schedule's exact counts, rule by rule, atomically, with the optimizer's state."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import pruneplug
from pruneplug.plans import Plan, PlanError, Rule, parse_plan


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 10), nn.ReLU(), nn.Linear(10, 3))


LOCAL = [{"types": ["Linear"], "strategy": "l1_unstructured", "params": {"amount": 0.8}}]
SCHEDULE = {"name": "linear", "start": 0, "end": 6, "every": 2}


def test_local_rules_reach_each_tensors_exact_count_at_pruning_steps_and_hold_between() -> None:
    model = mlp()
    pruner = pruneplug.Pruner(model, LOCAL, schedule=SCHEDULE)
    layers = [model[0], model[2], model[4]]
    for step in range(8):
        pruner.step()
        target = pruneplug.make_schedule(SCHEDULE).at(step, 0.8)
        for layer in layers:
            mask = layer.weight_mask if pruneplug.is_pruned(layer) else torch.ones_like(layer.weight, dtype=torch.bool)
            assert int((~mask.bool()).sum()) == round(target * layer.weight.numel()), (step, layer)
    assert pruner.current_step == 8
    assert pruner.sparsity() == [pytest.approx((154 + 128 + 24) / (192 + 160 + 30))]  # round(0.8 n) each


def test_a_global_rule_reaches_the_exact_count_over_its_tensors_together() -> None:
    model = mlp()
    rules = [{"types": ["Linear"], "strategy": "l1_unstructured", "scope": "global", "params": {"amount": 0.7}}]
    pruner = pruneplug.Pruner(model, rules, schedule={"name": "cubic", "end": 3})
    total = sum(m.weight.numel() for m in model if isinstance(m, nn.Linear))
    for step in range(4):
        pruner.step()
        pruned = sum(int((~m.weight_mask).sum()) for m in model if isinstance(m, nn.Linear) and pruneplug.is_pruned(m))
        assert pruned == round(pruner.target_sparsity()[0] * total), step
    assert pruner.sparsity() == [round(0.7 * total) / total]


def test_a_structured_rule_counts_slices() -> None:
    model = mlp()
    rules = [{"modules": ["0"], "strategy": "ln_structured", "params": {"amount": 0.5, "n": 1, "dim": 0}}]
    pruner = pruneplug.Pruner(model, rules, schedule={"name": "linear", "end": 2})
    for step, rows in ((0, 0), (1, 4), (2, 8), (3, 8)):
        pruner.step()
        dead_rows = int((~model[0].weight_mask.any(dim=1)).sum()) if pruneplug.is_pruned(model[0]) else 0
        assert dead_rows == rows, step
    assert pruner.sparsity() == [0.5]


def test_rules_take_their_own_schedule_and_a_schedule_final_over_the_amount() -> None:
    model = mlp()
    rules = [
        {"modules": ["0"], "strategy": "l1_unstructured", "params": {"amount": 0.5}},
        {"modules": ["2"], "strategy": "l1_unstructured", "schedule": {"name": "one_shot", "final": 0.25, "start": 1}},
    ]
    pruner = pruneplug.Pruner(model, rules, schedule={"name": "constant"})
    pruner.step()
    assert pruner.sparsity() == [0.5, 0.0]
    pruner.step()
    assert pruner.sparsity() == [0.5, 0.25]
    assert [s.name for s in pruner.schedules] == ["constant", "one_shot"]
    assert pruner.targets() == [("0.weight",), ("2.weight",)]


def test_a_plan_object_and_a_plan_file_give_the_rules(tmp_path: Path) -> None:
    plan = Plan(
        rules=[Rule(types=["Linear"], strategy="l1_unstructured", params={"amount": 0.5})], mask_storage="packed"
    )
    path = tmp_path / "plan.toml"
    path.write_text(
        '[[rules]]\ntypes = ["Linear"]\nstrategy = "l1_unstructured"\nparams = { amount = 0.5 }\n', encoding="utf-8"
    )
    for rules in (plan, path, str(path)):
        model = mlp()
        pruner = pruneplug.Pruner(model, rules, schedule={"name": "one_shot", "start": 0})
        pruner.step()
        assert pruner.sparsity() == [pytest.approx(191 / 382)]  # 96 + 80 + 15 of 192 + 160 + 30
    assert pruneplug.Pruner(mlp(), plan, schedule={"name": "constant"}).mask_storage == "packed"


def test_packed_masks_give_the_same_masks_as_bool_ones() -> None:
    bool_model, packed_model = mlp(), mlp()
    pruners = [
        pruneplug.Pruner(bool_model, LOCAL, schedule=SCHEDULE),
        pruneplug.Pruner(packed_model, LOCAL, schedule=SCHEDULE, mask_storage="packed"),
    ]
    for _ in range(7):
        for pruner in pruners:
            pruner.step()
    assert isinstance(packed_model[0].weight_mask, pruneplug.PackedMask)
    pruneplug.unpack_masks(packed_model)
    for a, b in zip(bool_model.state_dict().items(), packed_model.state_dict().items()):
        assert a[0] == b[0] and torch.equal(a[1], b[1])


def test_a_step_that_fails_changes_nothing_and_names_the_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    model = mlp()
    rules = [
        {"modules": ["0"], "strategy": "l1_unstructured", "params": {"amount": 0.5}},
        {"modules": ["2"], "strategy": "random_unstructured", "params": {"amount": 0.5}},
    ]
    pruner = pruneplug.Pruner(model, rules, schedule={"name": "linear", "end": 2})
    pruner.step()
    pruner.step()  # both rules pruned a quarter
    before = {key: value.clone() for key, value in model.state_dict().items()}
    real = pruneplug.training.pruner.prune
    errors: list[Exception] = [pruneplug.StrategyFailedError("it broke", strategy="random_unstructured"), OSError("?")]

    def failing(module: nn.Module, name: str, strategy: str, **params: object) -> nn.Module:
        if module is model[2]:
            torch.rand(3)  # the failed step drew random numbers: they are given back
            raise errors.pop(0)
        return real(module, name, strategy, **params)  # type: ignore[arg-type]

    monkeypatch.setattr(pruneplug.training.pruner, "prune", failing)
    rng = torch.get_rng_state()
    # a PruneplugError becomes a PlanError naming the rule and the tensor; anything else passes as it is
    for expected in (PlanError, OSError):
        with pytest.raises(expected) as caught:
            pruner.step()
        if isinstance(caught.value, PlanError):
            assert (caught.value.rule, caught.value.field) == (1, "strategy")
            assert str(caught.value).startswith("rules[1].strategy: 2.weight: ")
        assert pruner.current_step == 2  # not counted
        after = model.state_dict()
        assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
        assert torch.equal(torch.get_rng_state(), rng)
        assert len(pruneplug.pruning_history(model[0], "weight")) == 1  # rule 0's prune of this step undone
    monkeypatch.setattr(pruneplug.training.pruner, "prune", real)
    pruner.step()
    assert pruner.sparsity() == [0.5, 0.5]


def test_rules_a_schedule_cannot_drive_are_refused_naming_the_field() -> None:
    cases = [
        ({"types": ["Linear"], "strategy": "nm", "params": {"n": 2, "m": 4}}, "strategy"),
        ({"types": ["Linear"], "strategy": "magnitude", "params": {"keep_n": 2, "of_m": 4}}, "params"),
        ({"types": ["Linear"], "strategy": "wanda", "params": {"amount": 0.5}}, "strategy"),
        ({"types": ["Linear"], "strategy": "l1_unstructured", "params": {"amount": 5}}, "params.amount"),
        ({"types": ["Conv2d"], "strategy": "l1_unstructured", "params": {"amount": 0.5}}, "types[0]"),
    ]
    for rule, field in cases:
        with pytest.raises(PlanError) as caught:
            pruneplug.Pruner(mlp(), [rule], schedule={"name": "linear", "end": 4})
        assert (caught.value.rule, caught.value.field) == (0, field), rule
    with pytest.raises(PlanError, match="no schedule") as caught:
        pruneplug.Pruner(mlp(), LOCAL)
    assert caught.value.field == "schedule"
    with pytest.raises(PlanError, match="cubc"):
        pruneplug.Pruner(mlp(), LOCAL, schedule={"name": "cubc", "end": 4})
    with pytest.raises(PlanError, match="non-empty list"):
        pruneplug.Pruner(mlp(), [], schedule=SCHEDULE)


def test_a_rule_may_leave_its_amount_to_the_pruners_schedule_final() -> None:
    rules = [{"types": ["Linear"], "strategy": "l1_unstructured"}]
    pruner = pruneplug.Pruner(mlp(), rules, schedule={"name": "linear", "final": 0.5, "end": 4})
    for _ in range(5):
        pruner.step()
    assert pruner.sparsity() == [0.5] and pruner.schedules[0].final == 0.5


def test_a_model_pruned_already_counts_toward_the_target() -> None:
    model = mlp()
    pruneplug.prune(model[0], "weight", "l1_unstructured", amount=0.6)
    pruner = pruneplug.Pruner(
        model, [{"modules": ["0"], "strategy": "l1_unstructured", "params": {"amount": 0.75}}], schedule=SCHEDULE
    )
    assert pruner.sparsity() == [pytest.approx(115 / 192)]
    for _ in range(4):  # targets 0.0, 0.25, 0.5 are below what is pruned: nothing changes
        pruner.step()
        assert int((~model[0].weight_mask).sum()) == 115
    pruner.step()
    pruner.step()
    pruner.step()
    assert int((~model[0].weight_mask).sum()) == 144


def test_step_takes_the_step_to_handle() -> None:
    model = mlp()
    pruner = pruneplug.Pruner(model, LOCAL, schedule=SCHEDULE)
    pruner.step(step=6)
    assert pruner.current_step == 7 and pruner.sparsity() == [pytest.approx(306 / 382)]
    with pytest.raises(pruneplug.InvalidScheduleError):
        pruner.step(step=-1)
    skipped = pruneplug.Pruner(
        model,
        [{"types": ["Conv2d"], "optional": True, "strategy": "l1_unstructured", "params": {"amount": 0.5}}],
        schedule=SCHEDULE,
    )
    assert skipped.schedules == []  # every rule skipped: the step is still checked
    for bad in (-1, 1.5, True):
        with pytest.raises(pruneplug.InvalidScheduleError, match="step must be an int >= 0"):
            skipped.step(step=bad)  # type: ignore[arg-type]
    assert skipped.current_step == 0


@pytest.mark.parametrize(
    ("schedule", "mask_storage", "field"),
    [({"name": "linear", "end": 4}, "bits", "mask_storage"), ({"name": "linear", "end": -1}, None, "schedule")],
)
def test_a_bad_schedule_or_mask_storage_is_named_as_such(
    schedule: dict[str, object], mask_storage: str | None, field: str
) -> None:
    model = nn.Sequential(nn.Linear(4, 4))
    rules = [{"types": ["Linear"], "strategy": "l1_unstructured", "params": {"amount": 0.5}}]
    with pytest.raises(PlanError) as caught:
        pruneplug.Pruner(model, rules, schedule=schedule, mask_storage=mask_storage)  # type: ignore[arg-type]
    assert caught.value.field == field


PLAN_YAML = """
schedule: {name: linear, end: 4, every: 2}
rules:
  - {modules: ["0"], strategy: l1_unstructured, params: {amount: 0.5}}
  - modules: ["2"]
    strategy: ln_structured
    params: {amount: 0.5, n: 2, dim: 0}
    schedule: {name: milestones, milestones: [[1, 0.25], [3, 0.5]]}
  - {modules: ["4"], strategy: l1_unstructured, scope: global, params: {amount: 0.75}}
"""


def test_a_plan_files_schedules_drive_it_as_the_same_rules_as_mappings_do(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN_YAML, encoding="utf-8")
    linear = {"name": "linear", "end": 4, "every": 2}
    as_mappings = [
        {"modules": ["0"], "strategy": "l1_unstructured", "params": {"amount": 0.5}, "schedule": linear},
        {
            "modules": ["2"],
            "strategy": "ln_structured",
            "params": {"amount": 0.5, "n": 2, "dim": 0},
            "schedule": {"name": "milestones", "milestones": [[1, 0.25], [3, 0.5]]},
        },
        {"modules": ["4"], "strategy": "l1_unstructured", "scope": "global", "params": {"amount": 0.75}},
    ]
    from_file, from_mappings = mlp(), mlp()
    pruners = [
        pruneplug.Pruner(from_file, path, schedule={"name": "constant"}),  # the plan's schedule comes before it
        pruneplug.Pruner(from_mappings, as_mappings, schedule=linear),
    ]
    assert [[s.name for s in pruner.schedules] for pruner in pruners] == [["linear", "milestones", "linear"]] * 2
    for step in range(6):
        for pruner in pruners:
            pruner.step()
        ours, theirs = from_file.state_dict(), from_mappings.state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[key], theirs[key]) for key in ours), step
    assert pruners[0].sparsity() == pruners[1].sparsity() == [0.5, 0.5, pytest.approx(0.75, abs=0.02)]
    assert pruners[0].state_dict()["rules"] == pruners[1].state_dict()["rules"]


def test_a_rules_schedule_comes_before_the_plans_which_comes_before_the_pruners() -> None:
    one_shot = {"name": "one_shot", "start": 2}
    plan = parse_plan(
        {
            "schedule": {"name": "linear", "final": 0.5, "end": 2},
            "rules": [
                {"modules": ["0"], "strategy": "l1_unstructured", "schedule": {"name": "constant", "final": 0.25}},
                {"modules": ["2"], "strategy": "l1_unstructured"},  # its amount: the plan's final
            ],
        }
    )
    pruner = pruneplug.Pruner(mlp(), plan, schedule=one_shot)
    assert [s.describe() for s in pruner.schedules] == [
        "constant(final=0.25, start=0)",
        "linear(initial=0.0, final=0.5, start=0, end=2, every=1)",
    ]
    assert pruner.target_sparsity(1) == [0.25, 0.25] and pruner.target_sparsity(2) == [0.25, 0.5]
    keyword = pruneplug.Pruner(mlp(), [{"strategy": "l1_unstructured", "params": {"amount": 0.5}}], schedule=one_shot)
    assert [s.name for s in keyword.schedules] == ["one_shot"]  # a rule that has none in the plan gets the keyword's
