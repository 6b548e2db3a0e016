"""Schedules in plans: the plan's and each rule's, validated when read, written back as read, applied at their end."""

from __future__ import annotations

import functools
import textwrap
from typing import Any

import pytest
import torch
from hypothesis import given, strategies as st
from torch import nn

import pruneplug
from pruneplug.plans import (
    FORMATS,
    Plan,
    PlanError,
    Rule,
    apply_plan,
    dumps_plan,
    loads_plan,
    parse_plan,
    plan_schema,
)

L1 = {"strategy": "l1_unstructured", "params": {"amount": 0.5}}


@functools.cache
def schema_validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    with pruneplug.use_registry(pruneplug.Registry(load_entry_points=False)):
        return jsonschema.Draft202012Validator(plan_schema())


def canonical(plan: Plan) -> str:
    """Tells 1 from 1.0, which == does not."""
    return repr(plan.model_dump())


@st.composite
def schedule_specs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid schedule mapping as a file writes it: ints and floats as drawn, optional fields left out or not."""
    name = draw(st.sampled_from(["cubic", "linear", "exponential", "one_shot", "constant", "milestones"]))
    if name == "milestones":
        steps = sorted(draw(st.sets(st.integers(0, 1000), min_size=1, max_size=4)))
        sparsities = sorted(draw(st.lists(st.floats(0.0, 0.99), min_size=len(steps), max_size=len(steps))))
        return {"name": name, "milestones": [[step, sparsity] for step, sparsity in zip(steps, sparsities)]}
    spec: dict[str, Any] = {"name": name}
    start = draw(st.integers(0, 100))
    if draw(st.booleans()):
        spec["start"] = start
    if name not in ("one_shot", "constant"):
        spec["end"] = start + draw(st.integers(0, 100))
        if draw(st.booleans()):
            spec["every"] = draw(st.integers(1, 10))
    if draw(st.booleans()):
        spec["final"] = draw(st.one_of(st.floats(0.5, 0.99), st.just(0)))
    if name != "constant" and draw(st.booleans()):
        spec["initial"] = draw(st.sampled_from([0, 0.0, 0.25]))
        if spec.get("final") == 0:
            del spec["final"]
    return spec


@given(
    plan_schedule=st.one_of(st.none(), schedule_specs()),
    rule_schedules=st.lists(st.one_of(st.none(), schedule_specs()), min_size=1, max_size=3),
)
def test_plans_with_schedules_round_trip_through_every_format(
    registry: pruneplug.Registry, plan_schedule: dict[str, Any] | None, rule_schedules: list[dict[str, Any] | None]
) -> None:
    rules = [L1 if spec is None else {**L1, "schedule": spec} for spec in rule_schedules]
    data: dict[str, Any] = {"rules": rules} if plan_schedule is None else {"schedule": plan_schedule, "rules": rules}
    plan = parse_plan(data)
    assert plan.schedule == plan_schedule and [rule.schedule for rule in plan.rules] == rule_schedules
    assert not list(schema_validator().iter_errors(data))  # the schema accepts what the model does
    for fmt in FORMATS:
        text = dumps_plan(plan, fmt)
        again = loads_plan(text, fmt)
        assert canonical(again) == canonical(plan), (fmt, text)
        assert dumps_plan(again, fmt) == text


def test_the_same_schedules_by_hand_in_three_formats(registry: pruneplug.Registry) -> None:
    texts = {
        "toml": """
            schedule = { name = "cubic", end = 1000, every = 10 }

            [[rules]]
            strategy = "l1_unstructured"
            types = ["Linear"]
            params = { amount = 0.9 }

            [[rules]]
            strategy = "l1_unstructured"
            modules = ["fc3"]
            schedule = { name = "milestones", milestones = [[0, 0.25], [500, 0.5]] }
        """,
        "yaml": """
            schedule: {name: cubic, end: 1000, every: 10, final: null}
            rules:
              - {strategy: l1_unstructured, types: [Linear], params: {amount: 0.9}}
              - strategy: l1_unstructured
                modules: [fc3]
                schedule: {name: milestones, milestones: [[0, 0.25], [500, 0.5]]}
        """,
        "json": """
            {"schedule": {"name": "cubic", "end": 1000, "every": 10},
             "rules": [{"strategy": "l1_unstructured", "types": ["Linear"], "params": {"amount": 0.9}},
                       {"strategy": "l1_unstructured", "modules": ["fc3"],
                        "schedule": {"name": "milestones", "milestones": [[0, 0.25], [500, 0.5]]}}]}
        """,
    }
    plans = {fmt: loads_plan(textwrap.dedent(text), fmt) for fmt, text in texts.items()}
    assert len({canonical(plan) for plan in plans.values()}) == 1  # YAML's final: null restates the default
    plan = plans["yaml"]
    assert plan.schedule == {"name": "cubic", "end": 1000, "every": 10}
    assert "null" not in dumps_plan(plan, "yaml") and "schedule" in dumps_plan(plan, "toml")
    assert [plan.schedule_for(i).name for i in range(2)] == ["cubic", "milestones"]  # type: ignore[union-attr]
    ended = plan.end_state()
    assert [rule.params["amount"] for rule in ended.rules] == [0.9, 0.5]  # the amount; milestones' last sparsity
    assert plan.rules[1].params == {}  # left to the schedule, and written back so


def test_plans_without_schedules_are_written_as_before(registry: pruneplug.Registry) -> None:
    plan = parse_plan({"rules": [L1]})
    assert plan.schedule is None and plan.rules[0].schedule is None and plan.schedule_for(0) is None
    assert all("schedule" not in dumps_plan(plan, fmt) for fmt in FORMATS)
    assert plan.end_state() == plan


def test_a_schedule_object_or_name_is_held_as_its_mapping(registry: pruneplug.Registry) -> None:
    cubic = pruneplug.make_schedule("cubic", final=0.8, end=100)
    rule = Rule(strategy="l1_unstructured", schedule=cubic)
    assert rule.schedule == {"name": "cubic", "final": 0.8, "end": 100} and rule.params == {}
    assert pruneplug.make_schedule(rule.schedule) == cubic
    named = Rule(strategy="l1_unstructured", params={"amount": 0.5}, schedule="one_shot")
    assert named.schedule == {"name": "one_shot"}


@pytest.mark.parametrize(
    ("data", "rule", "field", "words"),
    [
        ({"schedule": {"name": "cubc", "end": 9}, "rules": [L1]}, None, "schedule.name", ["'cubic'", "milestones"]),
        ({"schedule": {"end": 9}, "rules": [L1]}, None, "schedule.name", ["names it under 'name'"]),
        ({"rules": [L1, {**L1, "schedule": {"name": "cubic", "ned": 9}}]}, 1, "schedule.end", ["missing", "'end'"]),
        ({"rules": [{**L1, "schedule": {"name": "linear", "end": 2, "start": 5}}]}, 0, "schedule", ["end=2 is before"]),
        ({"rules": [{**L1, "schedule": {"name": "linear", "end": 2, "every": 0}}]}, 0, "schedule.every", ["every"]),
        ({"rules": [{**L1, "schedule": 3}]}, 0, "schedule", ["table/mapping"]),
        (
            {"rules": [{**L1, "params": {"amount": 3}, "schedule": {"name": "cubic", "end": 9}}]},
            0,
            "params.amount",
            ["final sparsity, a fraction in [0, 1)", "got 3"],
        ),
        (
            {"rules": [{**L1, "params": {"amount": 0.1}, "schedule": {"name": "cubic", "initial": 0.2, "end": 9}}]},
            0,
            "params.amount",
            ["below initial=0.2"],
        ),
        (
            {"schedule": {"name": "cubic", "end": 9}, "rules": [L1, {**L1, "params": {"amount": 1.0}}]},
            1,
            "params.amount",
            ["final=1.0 is not a sparsity"],
        ),
        ({"rules": [{"strategy": "identity", "schedule": {"name": "constant"}}]}, 0, "schedule", ["takes no amount"]),
        (
            {"rules": [{"strategy": "l1_unstructured", "schedule": {"name": "cubic", "end": 9}}]},
            0,
            "params.amount",
            ["missing required parameter 'amount'"],
        ),
    ],
)
def test_bad_schedules_name_the_rule_and_the_field(
    registry: pruneplug.Registry, data: dict[str, Any], rule: int | None, field: str, words: list[str]
) -> None:
    with pytest.raises(PlanError) as caught:
        parse_plan(data, source="plan.toml")
    assert (caught.value.rule, caught.value.field) == (rule, field), str(caught.value)
    assert str(caught.value).startswith(f"{caught.value.location}: ") and caught.value.source == "plan.toml"
    for word in words:
        assert word in str(caught.value)


def test_a_plan_made_in_python_checks_its_rules_against_its_schedule(registry: pruneplug.Registry) -> None:
    rules = [Rule(strategy="identity"), Rule(strategy="l1_unstructured", params={"amount": 4})]
    with pytest.raises(ValueError, match="final sparsity, a fraction"):  # pydantic's ValidationError, as for any field
        Plan(schedule={"name": "linear", "end": 4}, rules=rules)
    with pytest.raises(PlanError) as caught:
        parse_plan({"schedule": {"name": "linear", "end": 4}, "rules": rules})
    assert (caught.value.rule, caught.value.field) == (1, "params.amount")
    plan = Plan(schedule={"name": "linear", "final": 0.5, "end": 4}, rules=rules)
    assert [rule.params for rule in plan.end_state().rules] == [{}, {"amount": 0.5}]  # identity takes no amount


def test_the_plans_final_lets_its_rules_leave_the_amount_out(registry: pruneplug.Registry) -> None:
    plan = parse_plan(
        {"schedule": {"name": "linear", "final": 0.75, "end": 4}, "rules": [{"strategy": "l1_unstructured"}]}
    )
    assert plan.rules[0].params == {} and plan.end_state().rules[0].params == {"amount": 0.75}
    with pytest.raises(PlanError, match="missing required parameter 'amount'"):  # the rule's schedule has no final
        parse_plan(
            {**plan.model_dump(), "rules": [{"strategy": "l1_unstructured", "schedule": {"name": "cubic", "end": 1}}]}
        )


def net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 10))


def test_apply_plan_prunes_a_scheduled_rule_to_its_final_sparsity_and_says_so(registry: pruneplug.Registry) -> None:
    plan = {
        "schedule": {"name": "cubic", "end": 100},
        "rules": [
            {"modules": ["0"], "strategy": "l1_unstructured", "params": {"amount": 0.5}},
            {"modules": ["2"], "strategy": "l1_unstructured", "schedule": {"name": "one_shot", "final": 0.25}},
        ],
    }
    model = net()
    report = apply_plan(model, plan)
    assert [rule.sparsity_after for rule in report.rules] == [0.5, 0.25]
    assert report.schedules == {
        0: "cubic(initial=0.0, final=None, start=0, end=100, every=1): final sparsity 0.5",
        1: "one_shot(initial=0.0, final=0.25, start=0): final sparsity 0.25",
    }
    assert "pruned at once to their final sparsity" in report.to_markdown()
    assert '"schedules": {' in report.to_json()
    same = net()  # the same as the plan without schedules, with the final sparsities as amounts
    apply_plan(same, {"rules": [{**rule, "params": {"amount": a}} for rule, a in zip(plan["rules"], (0.5, 0.25))]})
    for ours, theirs in zip(model.state_dict().values(), same.state_dict().values()):
        assert torch.equal(ours, theirs)
    assert apply_plan(net(), {"rules": [L1]}).schedules == {}
