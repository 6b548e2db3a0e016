"""The built-in pruning schedules: three ramps, milestones, constant and one-shot.

With ``p = (t - start) / (end - start)`` the progress of pruning step ``t``
from ``start`` to ``end``, ``s_i`` the ``initial`` and ``s_f`` the ``final``
sparsity, the ramps give at each pruning step ``start <= t < end``:

``cubic``
    ``s_i + (s_f - s_i) * (1 - (1 - p)**3)``: Zhu & Gupta's gradual pruning
    (AGP, 2017), ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n dt))**3``
    with ``t0 = start``, ``dt = every``, ``n dt = end - start``. Fast at
    first, when many weights are redundant, then slower.
``linear``
    ``s_i + (s_f - s_i) * p``: the same number of entries each pruning step.
``exponential``
    ``s_i + (1 - s_i) * (1 - r**p)``, ``r = (1 - s_f) / (1 - s_i)``: the
    remaining density ``1 - s`` decays geometrically from ``1 - s_i`` to
    ``1 - s_f``, so each pruning step prunes the same fraction of what is
    still unpruned (on an even grid).

and every schedule gives ``s_i`` before ``start`` and exactly ``s_f`` from
``end`` on. ``milestones`` jumps to given sparsities at given steps,
``constant`` holds one sparsity at every step and ``one_shot`` prunes all at
one step.

>>> cubic = Cubic(initial=0.0, final=0.9, start=0, end=1000, every=10)
>>> cubic.at(500), round(cubic.at(999), 7), cubic.at(1000)
(0.7875, 0.8999991, 0.9)
"""

from __future__ import annotations

import bisect
import math
import numbers
from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, Field, model_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from .base import Schedule, SparsityField, StepField

__all__ = ["BUILTIN_SCHEDULES", "Constant", "Cubic", "Exponential", "Linear", "Milestones", "OneShot"]


class Cubic(Schedule):
    """Zhu & Gupta's gradual pruning (AGP): a cubic ramp, fast at first, slowing down to final at end.

    ``s_t = s_f + (s_i - s_f) * (1 - p)**3`` at each pruning step ``t``,
    ``p = (t - start) / (end - start)``: the schedule of "To prune, or not
    to prune" (2017) and ``torch.ao.pruning``'s ``CubicSL``.
    """

    name: ClassVar[str] = "cubic"

    def sparsity(self, step: int, initial: float, final: float) -> float:
        """``initial + (final - initial) * (1 - (1 - p)**3)`` (exactly ``initial`` at ``start``)."""
        return initial + (final - initial) * (1.0 - (1.0 - self.progress(step)) ** 3)


class Linear(Schedule):
    """A straight ramp from initial at start to final at end: as many entries pruned at each pruning step."""

    name: ClassVar[str] = "linear"

    def sparsity(self, step: int, initial: float, final: float) -> float:
        """``initial + (final - initial) * p``."""
        return initial + (final - initial) * self.progress(step)


class Exponential(Schedule):
    """The unpruned fraction decays geometrically from 1 - initial to 1 - final: the same share of it each step.

    ``s(p) = s_i + (1 - s_i) * (1 - r**p)`` with ``r = (1 - s_f) / (1 - s_i)``,
    that is ``1 - s(p) = (1 - s_i) * r**p``. Against ``cubic`` it depends on
    the final sparsity: from 0 to 0.9 it is slower at first and faster near
    the end, but to 0.99 it is the faster at first too (0.37 against 0.27 a
    tenth of the way).
    """

    name: ClassVar[str] = "exponential"

    def sparsity(self, step: int, initial: float, final: float) -> float:
        """``initial + (1 - initial) * (1 - r**p)``, ``r = (1 - final) / (1 - initial)``."""
        ratio = (1.0 - final) / (1.0 - initial)
        return initial + (1.0 - initial) * -math.expm1(self.progress(step) * math.log(ratio))


def _whole(value: object) -> bool:
    """Whether ``value`` is a valid step (so a field filled in from it holds no error of its own)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) >= 0


def _fraction(value: object) -> float | None:
    """``value`` if it is a valid sparsity (so a field filled in from it holds no error of its own), else ``None``."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and 0.0 <= float(value) < 1.0:
        return float(value)
    return None


def _pairs(value: object) -> object:
    """Milestones as given (a list of ``[step, sparsity]`` pairs, from a file) as a tuple of tuples."""
    if isinstance(value, (list, tuple)) and all(isinstance(pair, (list, tuple)) for pair in value):
        return tuple(tuple(pair) for pair in value)
    return value


class Milestones(Schedule):
    """Stepwise: at each milestone's step the target jumps to its sparsity, held until the next milestone.

    ``milestones`` is a list of ``(step, sparsity)`` pairs, steps strictly
    increasing and sparsities non-decreasing. The target is ``initial``
    before the first step; ``start`` is the first step, ``end`` the last and
    ``final`` the last sparsity (all three set from the milestones), and the
    pruning steps are the milestones' steps.
    """

    name: ClassVar[str] = "milestones"
    not_taken: ClassVar[tuple[str, ...]] = ("start", "end", "final", "every")

    final: SkipJsonSchema[float | None] = None
    start: SkipJsonSchema[int] = 0
    end: SkipJsonSchema[int] = 0
    every: SkipJsonSchema[int] = 1
    milestones: Annotated[tuple[tuple[StepField, SparsityField], ...], BeforeValidator(_pairs)] = Field(
        description="(step, sparsity) pairs: steps strictly increasing, sparsities non-decreasing",
        json_schema_extra={"minItems": 1},
    )

    @classmethod
    def derive(cls, data: dict[str, Any]) -> dict[str, Any]:
        """``start``, ``end`` and ``final``: the first step, the last step and the last sparsity."""
        pairs = _pairs(data.get("milestones"))
        if isinstance(pairs, tuple) and pairs and all(len(pair) == 2 for pair in pairs):
            first, last = pairs[0], pairs[-1]
            if _whole(first[0]) and _whole(last[0]):
                data["start"], data["end"] = int(first[0]), int(last[0])
            final = _fraction(last[1])
            if final is not None:
                data["final"] = final
        return data

    @classmethod
    def not_taken_reason(cls) -> str:
        return "start, end and final are the first step, the last step and the last sparsity of milestones"

    @model_validator(mode="after")
    def _check_order(self) -> Milestones:
        """(Replaces the base's check, which the milestones' order implies, to name the milestones at fault.)"""
        if not self.milestones:
            raise PydanticCustomError("milestones_empty", "milestones: give at least one (step, sparsity) pair", {})
        for (step, sparsity), (next_step, next_sparsity) in zip(self.milestones, self.milestones[1:]):
            if next_step <= step:
                raise PydanticCustomError(
                    "milestones_order",
                    "milestones: step {next} comes after step {step}; steps must increase",
                    {"next": next_step, "step": step},
                )
            if next_sparsity < sparsity:
                raise PydanticCustomError(
                    "milestones_order",
                    "milestones: sparsity {next} at step {next_step} is below {sparsity} at step {step}; "
                    "a schedule only ever prunes more",
                    {"next": next_sparsity, "next_step": next_step, "sparsity": sparsity, "step": step},
                )
        if self.initial > self.milestones[0][1]:
            raise PydanticCustomError(
                "milestones_order",
                "initial={initial} is above the first milestone's sparsity {first}",
                {"initial": self.initial, "first": self.milestones[0][1]},
            )
        return self

    def sparsity(self, step: int, initial: float, final: float) -> float:
        """The sparsity of the last milestone at or before ``step``."""
        steps = [milestone for milestone, _ in self.milestones]
        return self.milestones[bisect.bisect_right(steps, step) - 1][1]

    def prunes_at(self, step: int) -> bool:
        """Whether ``step`` is one of the milestones' steps."""
        step = self._checked_step(step)
        return any(milestone == step for milestone, _ in self.milestones)

    def steps(self) -> list[int]:
        """The milestones' steps."""
        return [milestone for milestone, _ in self.milestones]


def _at_start(data: dict[str, Any]) -> dict[str, Any]:
    """``end`` set to ``start`` (0 when ``start`` is not an int: its own error says so)."""
    start = data.get("start", 0)
    data["end"] = int(start) if _whole(start) else 0
    return data


class OneShot(Schedule):
    """All at once: initial before start, final from start on (start is the one pruning step)."""

    name: ClassVar[str] = "one_shot"
    not_taken: ClassVar[tuple[str, ...]] = ("end", "every")

    end: SkipJsonSchema[int] = 0
    every: SkipJsonSchema[int] = 1

    @classmethod
    def derive(cls, data: dict[str, Any]) -> dict[str, Any]:
        """``end`` is ``start``."""
        return _at_start(data)

    @classmethod
    def not_taken_reason(cls) -> str:
        return "it prunes at one step, start, which is also its end"

    def sparsity(self, step: int, initial: float, final: float) -> float:
        """``final``: a step from ``initial`` straight to ``final`` (never reached: ``start`` is ``end``)."""
        return final


class Constant(Schedule):
    """One sparsity throughout: final at every step, pruned to at start and then held (for fine-tuning).

    ``initial`` is ``final`` (it is not given), so the target is the same at
    every step, before ``start`` too; the only pruning step is ``start``.
    With ``final=None``, :meth:`at` gives the ``final`` it is called with at
    every step.
    """

    name: ClassVar[str] = "constant"
    not_taken: ClassVar[tuple[str, ...]] = ("initial", "end", "every")

    initial: SkipJsonSchema[float] = 0.0
    end: SkipJsonSchema[int] = 0
    every: SkipJsonSchema[int] = 1

    @classmethod
    def derive(cls, data: dict[str, Any]) -> dict[str, Any]:
        """``initial`` is ``final`` (0.0 while ``final`` is not given), ``end`` is ``start``."""
        final = _fraction(data.get("final"))
        data["initial"] = 0.0 if final is None else final
        return _at_start(data)

    @classmethod
    def not_taken_reason(cls) -> str:
        return "it holds final at every step and prunes at start alone"

    def sparsity(self, step: int, initial: float, final: float) -> float:
        """``final``."""
        return final

    def at(self, step: int, final: float | None = None) -> float:
        """The final sparsity, at every step (``final`` as for :meth:`Schedule.at`)."""
        self._checked_step(step)
        return self.resolve_final(final)


BUILTIN_SCHEDULES: tuple[type[Schedule], ...] = (Cubic, Linear, Exponential, Milestones, Constant, OneShot)
"""The schedules pruneplug registers itself (through the ``pruneplug_add_schedules`` hook, as plugins do)."""
