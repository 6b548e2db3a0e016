"""The built-in schedules: the contract every one keeps (hypothesis), and each formula at hand-computed points."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st
from torch.ao.pruning.scheduler.cubic_scheduler import CubicSL

import pruneplug
from pruneplug.schedules.base import Schedule
from pruneplug.schedules.builtin import BUILTIN_SCHEDULES, Constant, Cubic, Exponential, Linear, Milestones, OneShot

RAMPS = (Cubic, Linear, Exponential)
SPARSITY = st.floats(0.0, 0.999, allow_nan=False)


@st.composite
def schedules(draw: st.DrawFn, kind: type[Schedule] | None = None) -> tuple[Schedule, float]:
    """A built-in schedule with random parameters, and a final sparsity to call it with (used if it has none)."""
    kind = kind or draw(st.sampled_from(BUILTIN_SCHEDULES))
    low, high = sorted((draw(SPARSITY), draw(SPARSITY)))
    final = draw(st.sampled_from((None, high)))
    start = draw(st.integers(0, 300))
    if kind is Milestones:
        steps = sorted(draw(st.sets(st.integers(0, 400), min_size=1, max_size=5)))
        levels = sorted(draw(st.lists(st.floats(low, 0.999), min_size=len(steps), max_size=len(steps))))
        return Milestones(initial=low, milestones=list(zip(steps, levels))), high
    if kind is Constant:
        return Constant(final=final, start=start), high
    if kind is OneShot:
        return OneShot(initial=low, final=final, start=start), high
    end = start + draw(st.integers(0, 400))
    return kind(initial=low, final=final, start=start, end=end, every=draw(st.integers(1, 60))), high


def _resolved(schedule: Schedule, final: float) -> tuple[float, float]:
    """The schedule's (initial, final) sparsities when called with ``final``."""
    resolved = schedule.resolve_final(final)
    return (resolved if isinstance(schedule, Constant) else schedule.initial), resolved


@settings(max_examples=80)
@given(drawn=schedules())
def test_every_builtin_is_monotone_between_initial_and_final(drawn: tuple[Schedule, float]) -> None:
    schedule, final = drawn
    initial, resolved = _resolved(schedule, final)
    values = [schedule.at(step, final) for step in range(schedule.end + 3)]
    assert all(a <= b for a, b in itertools.pairwise(values)), schedule
    assert all(initial <= value <= resolved < 1.0 for value in values), schedule


@settings(max_examples=80)
@given(drawn=schedules(), after=st.integers(0, 10**9))
def test_every_builtin_is_exactly_final_from_end_on_and_initial_before_start(
    drawn: tuple[Schedule, float], after: int
) -> None:
    schedule, final = drawn
    initial, resolved = _resolved(schedule, final)
    assert schedule.at(schedule.end, final) == resolved
    assert schedule.at(schedule.end + after, final) == resolved
    assert all(schedule.at(step, final) == initial for step in range(max(schedule.start - 3, 0), schedule.start))


@settings(max_examples=80)
@given(drawn=schedules())
def test_at_start_a_ramp_gives_initial_and_the_others_their_first_target(drawn: tuple[Schedule, float]) -> None:
    schedule, final = drawn
    at_start = schedule.at(schedule.start, final)
    if isinstance(schedule, Milestones):
        assert at_start == schedule.milestones[0][1]
    elif isinstance(schedule, (OneShot, Constant)) or schedule.start == schedule.end:
        assert at_start == schedule.resolve_final(final)
    else:
        assert at_start == schedule.initial


@settings(max_examples=80)
@given(drawn=schedules())
def test_prunes_at_and_steps_agree_and_the_target_is_held_between_pruning_steps(
    drawn: tuple[Schedule, float],
) -> None:
    schedule, final = drawn
    steps = schedule.steps()
    assert steps == sorted(set(steps)) and steps[0] == schedule.start and steps[-1] == schedule.end
    assert [step for step in range(schedule.end + 3) if schedule.prunes_at(step)] == steps
    if not isinstance(schedule, Milestones):  # the grid of every, and end
        assert steps == [
            step
            for step in range(schedule.start, schedule.end + 1)
            if (step - schedule.start) % schedule.every == 0 or step == schedule.end
        ]
    for step in range(schedule.start, schedule.end):
        last = max(s for s in steps if s <= step)
        assert schedule.at(step, final) == schedule.at(last, final)
    assert schedule.preview(final) == [(step, schedule.at(step, final)) for step in steps]


@settings(max_examples=60)
@given(drawn=schedules())
def test_the_mapping_form_makes_the_same_schedule(drawn: tuple[Schedule, float]) -> None:
    schedule, _ = drawn
    spec = schedule.to_spec()
    assert spec["name"] == schedule.name and not set(spec) & set(schedule.not_taken)
    with pruneplug.use_registry(pruneplug.Registry(load_entry_points=False)):
        assert pruneplug.make_schedule(spec) == schedule


@settings(max_examples=60)
@given(drawn=schedules(Cubic), data=st.data())
def test_cubic_is_torchs_cubicsl_at_every_pruning_step(drawn: tuple[Schedule, float], data: st.DataObject) -> None:
    """torch.ao.pruning's CubicSL computes Zhu & Gupta's formula at any step; on the grid, ours is the same."""
    schedule, final = drawn
    initial, resolved = _resolved(schedule, final)
    length = schedule.end - schedule.start
    step = data.draw(st.sampled_from(schedule.steps()[:-1] or [schedule.end]))
    expected = CubicSL.sparsity_compute_fn(initial, resolved, step, schedule.start, 1, length) if length else resolved
    assert math.isclose(schedule.at(step, final), expected, rel_tol=1e-12, abs_tol=1e-12)


def test_cubic_at_hand_computed_points() -> None:
    """s_t = s_f + (s_i - s_f)(1 - p)^3: p = 0.25 gives 0.9 - 0.8 * 0.421875; held until the next pruning step."""
    cubic = Cubic(initial=0.1, final=0.9, start=100, end=1100, every=10)
    assert cubic.at(99) == 0.1 and cubic.at(100) == 0.1
    assert math.isclose(cubic.at(350), 0.9 - 0.8 * 0.75**3)  # 0.5625
    assert cubic.at(359) == cubic.at(350) and cubic.at(360) > cubic.at(350)
    assert math.isclose(cubic.at(600), 0.9 - 0.8 * 0.125)  # 0.8
    assert cubic.at(1099) == cubic.at(1090) < 0.9 == cubic.at(1100)


def test_linear_and_exponential_at_hand_computed_points() -> None:
    linear = Linear(initial=0.2, final=0.6, start=0, end=40, every=10)
    assert [linear.at(step) for step in (0, 9, 10, 20, 39, 40)] == pytest.approx([0.2, 0.2, 0.3, 0.4, 0.5, 0.6])
    # the density 1 - s halves every pruning step: 0.8, 0.4, 0.2, 0.1, 0.05
    exponential = Exponential(initial=0.2, final=0.95, start=0, end=4)
    assert [exponential.at(step) for step in range(5)] == pytest.approx([0.2, 0.6, 0.8, 0.9, 0.95], abs=1e-12)
    assert exponential.at(0) == 0.2 and exponential.at(4) == 0.95


def test_an_end_off_the_grid_still_prunes_at_end() -> None:
    linear = Linear(final=0.5, start=3, end=10, every=4)
    assert linear.steps() == [3, 7, 10] and linear.prunes_at(10) and not linear.prunes_at(11)
    assert [linear.at(step) for step in (6, 7, 9, 10)] == [0.0, 4 / 7 * 0.5, 4 / 7 * 0.5, 0.5]


def test_milestones_one_shot_and_constant_at_hand_computed_points() -> None:
    milestones = Milestones(initial=0.1, milestones=[(10, 0.5), (20, 0.5), (30, 0.8)])
    assert (milestones.start, milestones.end, milestones.final, milestones.steps()) == (10, 30, 0.8, [10, 20, 30])
    assert [milestones.at(step) for step in (0, 9, 10, 19, 25, 29, 30, 99)] == [0.1, 0.1, 0.5, 0.5, 0.5, 0.5, 0.8, 0.8]
    one_shot = OneShot(final=0.7, start=5)
    assert one_shot.end == 5 and one_shot.steps() == [5]
    assert [one_shot.at(step) for step in (0, 4, 5, 6)] == [0.0, 0.0, 0.7, 0.7]
    constant = Constant(start=3)
    assert constant.steps() == [3] and constant.initial == 0.0
    assert [constant.at(step, 0.4) for step in (0, 3, 50)] == [0.4, 0.4, 0.4]
    assert Constant(final=0.6).initial == 0.6


def test_a_schedule_of_its_own_final_ignores_the_rules() -> None:
    """The final given at call time is the rule's amount: used only by a schedule without a final of its own."""
    cubic = Cubic(final=0.5, end=10)
    assert cubic.at(10, 0.9) == 0.5 and cubic.resolve_final(0.9) == 0.5
    assert Cubic(end=10).at(10, 0.9) == 0.9


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        (Cubic, {"start": 10, "end": 5}, r"schedule 'cubic': invalid parameters: end=5 is before start=10"),
        (Linear, {"end": 5, "every": 0}, r"schedule 'linear': .*every: Input should be greater than or equal to 1"),
        (Cubic, {"end": 5, "final": 1.0}, r"final: Input should be less than 1 \(got 1.0\)"),
        (Cubic, {"end": 5, "initial": -0.1}, r"initial: Input should be greater than or equal to 0"),
        (Cubic, {"end": 5, "final": float("nan")}, r"final: Input should be a finite number"),
        (Exponential, {"end": 5, "initial": 0.5, "final": 0.2}, r"initial=0.5 is above final=0.2"),
        (Cubic, {"end": -1}, r"end: Input should be greater than or equal to 0"),
        (Cubic, {"end": 5, "start": True}, r"start: Input should be a valid integer"),
        (Cubic, {}, r"missing required parameter 'end'"),
        (Cubic, {"end": 5, "fnal": 0.2}, r"unknown parameter 'fnal'. Did you mean 'final'\?"),
        (OneShot, {"start": 5, "end": 9}, r"schedule 'one_shot': .*'end' cannot be given: this schedule sets it"),
        (Constant, {"initial": 0.2}, r"'initial' cannot be given"),
        (Milestones, {"milestones": [(5, 0.1)], "final": 0.2}, r"'final' cannot be given"),
        (Milestones, {"milestones": []}, r"milestones: give at least one \(step, sparsity\) pair"),
        (Milestones, {"milestones": [(5, 0.1), (5, 0.2)]}, r"milestones: step 5 comes after step 5; steps must"),
        (Milestones, {"milestones": [(5, 0.3), (9, 0.2)]}, r"sparsity 0.2 at step 9 is below 0.3 at step 5"),
        (Milestones, {"milestones": [(5, 0.3)], "initial": 0.4}, r"initial=0.4 is above the first milestone's"),
        (Milestones, {"milestones": [(5, 1.2)]}, r"milestones.0.1: Input should be less than 1"),
    ],
)
def test_invalid_parameters_name_the_schedule_and_field(
    kind: type[Schedule], params: dict[str, Any], message: str
) -> None:
    with pytest.raises(pruneplug.InvalidScheduleError, match=message) as caught:
        kind(**params)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, pruneplug.InvalidParametersError)
    assert caught.value.schedule == kind.name and caught.value.errors


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.at(-1, 0.5), r"schedule 'cubic': step=-1 is negative"),
        (lambda s: s.prunes_at(-3), r"step=-3 is negative"),
        (lambda s: s.at(1.5, 0.5), r"a step must be an int .* got float 1.5"),
        (lambda s: s.at(True, 0.5), r"a step must be an int .* got bool True"),
        (lambda s: s.at(3), r"schedule 'cubic': it has no final sparsity of its own \(final=None\)"),
        (lambda s: s.at(3, 1.0), r"final=1.0 is not a sparsity"),
        (lambda s: s.at(3, 0.1), r"final=0.1 is below initial=0.2"),
    ],
)
def test_a_call_it_cannot_answer_raises_naming_the_schedule(call: Any, message: str) -> None:
    schedule = Cubic(initial=0.2, end=10)
    with pytest.raises(pruneplug.InvalidScheduleError, match=message):
        call(schedule)


def test_schedules_are_frozen_hashable_and_describe_themselves() -> None:
    cubic = Cubic(final=0.9, end=1000, every=10)
    with pytest.raises(Exception, match="frozen"):
        cubic.end = 5  # type: ignore[misc]
    assert hash(cubic) == hash(Cubic(final=0.9, end=1000, every=10))
    assert cubic.describe() == "cubic(initial=0.0, final=0.9, start=0, end=1000, every=10)"
    assert Milestones(milestones=[(1, 0.5)]).describe() == "milestones(initial=0.0, milestones=[[1, 0.5]])"
