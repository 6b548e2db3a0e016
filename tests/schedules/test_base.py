"""pruneplug.Schedule, the base: what it guarantees whatever a subclass's sparsity returns, and schedule_class."""

from __future__ import annotations

import math
import pickle
from typing import ClassVar

import pytest

import pruneplug
from pruneplug.schedules.base import Schedule, schedule_class
from pruneplug.schedules.builtin import Cubic


class Overshoot(Schedule):
    """Returns whatever it was made with, in range or not."""

    name: ClassVar[str] = "overshoot"
    value: float = 0.0

    def sparsity(self, step: int, initial: float, final: float) -> float:
        return self.value


def test_what_sparsity_returns_is_clamped_into_initial_and_final() -> None:
    assert Overshoot(value=2.0, initial=0.1, final=0.5, end=10).at(3) == 0.5
    assert Overshoot(value=-1.0, initial=0.1, final=0.5, end=10).at(3) == 0.1
    assert Overshoot(value=0.3, initial=0.1, final=0.5, end=10).at(3) == 0.3


def test_a_nan_sparsity_is_an_error_naming_the_schedule_and_step() -> None:
    with pytest.raises(pruneplug.InvalidScheduleError, match=r"schedule 'overshoot': sparsity\(step=2\) returned nan"):
        Overshoot(value=math.nan, final=0.5, end=10, every=2).at(3)


def test_a_subclass_field_is_a_parameter_validated_like_the_common_ones() -> None:
    with pytest.raises(pruneplug.InvalidScheduleError, match=r"schedule 'overshoot': .*value: Input should be"):
        Overshoot(value="high", end=10)  # type: ignore[arg-type]
    assert Overshoot(value=0.2, end=10).to_spec() == {
        "name": "overshoot",
        "initial": 0.0,
        "final": None,
        "start": 0,
        "end": 10,
        "every": 1,
        "value": 0.2,
    }


def test_the_base_is_abstract() -> None:
    with pytest.raises(TypeError, match="abstract"):
        Schedule(end=3)  # type: ignore[abstract]


def test_schedule_class_takes_concrete_named_subclasses_only() -> None:
    assert schedule_class(Cubic) is Cubic and schedule_class(Overshoot) is Overshoot
    with pytest.raises(TypeError, match="expected a subclass of pruneplug.Schedule, got 'cubic'"):
        schedule_class("cubic")
    with pytest.raises(TypeError, match="expected a subclass of pruneplug.Schedule, got .*Cubic"):
        schedule_class(Cubic(end=3))
    with pytest.raises(TypeError, match="schedule class Schedule is abstract: implement sparsity"):
        schedule_class(Schedule)

    class Nameless(Overshoot):
        name = "Nameless"

    with pytest.raises(ValueError, match="schedule name 'Nameless' of .*Nameless must be lowercase letters"):
        schedule_class(Nameless)


def test_errors_pickle_with_the_schedule_named() -> None:
    with pytest.raises(pruneplug.InvalidScheduleError) as caught:
        Cubic(end=3, every=0)
    again = pickle.loads(pickle.dumps(caught.value))
    assert type(again) is pruneplug.InvalidScheduleError and str(again) == str(caught.value)
    assert again.schedule == "cubic" and str(again).startswith("schedule 'cubic': invalid parameters: every")
