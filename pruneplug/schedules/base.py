"""The base of every pruning schedule: :class:`Schedule`, a frozen pydantic model.

A schedule says, for each training step, how sparse the pruned tensors should
be in all (the *target sparsity*: the fraction of their entries pruned, from
0 to 1 exclusive) and at which steps to prune. It is pure arithmetic on step
numbers: nothing here touches a model.

The *pruning steps* are ``start``, ``start + every``, ``start + 2 * every``,
... up to ``end``, and ``end`` itself even when ``end - start`` is not a
multiple of ``every``. :meth:`Schedule.at` gives

* ``initial`` before ``start``;
* ``final`` from ``end`` on, exactly;
* in between, :meth:`Schedule.sparsity` of the last pruning step at or before
  the step: the target changes only at pruning steps and is held between them.

Subclasses give the shape between ``start`` and ``end`` by implementing
:meth:`Schedule.sparsity`; the built-ins are in :mod:`.builtin`, and plugins
add theirs through the ``pruneplug_add_schedules`` hook.

>>> from pruneplug.schedules.builtin import Linear
>>> ramp = Linear(final=0.5, start=10, end=20, every=5)
>>> ramp.steps(), [ramp.at(step) for step in (0, 10, 14, 15, 19, 20, 100)]
([10, 15, 20], [0.0, 0.0, 0.0, 0.25, 0.25, 0.5, 0.5])
"""

from __future__ import annotations

import inspect
import math
import numbers
import re
from abc import ABC, abstractmethod
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from ..errors import InvalidScheduleError, close_matches_hint

__all__ = [
    "NAME_PATTERN_TEXT",
    "Schedule",
    "SparsityField",
    "StepField",
    "schedule_class",
]

SparsityField = Annotated[float, Field(ge=0.0, lt=1.0, allow_inf_nan=False)]
"""A target sparsity: the fraction of the entries pruned in all, in [0, 1) (an int 0 is 0.0)."""

StepField = Annotated[int, Field(ge=0)]
"""A training step: an int >= 0 (the count of optimizer steps taken so far)."""

NAME_PATTERN_TEXT = "lowercase letters, digits and underscores, starting with a letter"
_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")  # the registry's, for strategies, scores and statistics too


class Schedule(BaseModel, ABC):
    """A pruning schedule: the target sparsity at each training step, and the steps at which to prune.

    Subclasses set the class attribute ``name`` (the registered name) and
    implement :meth:`sparsity`; the docstring's first line is the summary
    ``pruneplug list`` shows. Instances are frozen and validated: making one
    with invalid parameters raises :class:`~pruneplug.InvalidScheduleError`
    naming the schedule and each field at fault (validated as a field of
    another pydantic model, or with ``model_validate``, it raises pydantic's
    ``ValidationError`` as any model does).

    Attributes:
        initial: the target sparsity before ``start`` (and at ``start`` for
            the ramps): a fraction in [0, 1).
        final: the target sparsity from ``end`` on, in [0, 1); ``None``: the
            ``final`` given to :meth:`at` (the amount of the rule the
            schedule drives). It must not be below ``initial``.
        start: the first pruning step.
        end: the last pruning step, from which the target is ``final``; not
            before ``start``.
        every: steps from one pruning step to the next (>= 1); ``end`` is a
            pruning step whatever ``every`` is.
        not_taken: (class attribute) fields the schedule fills in itself,
            which must not be given (``one_shot`` takes no ``end``: it is
            ``start``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: ClassVar[str]
    not_taken: ClassVar[tuple[str, ...]] = ()

    initial: SparsityField = Field(0.0, description="the target sparsity before start (and, for ramps, at start)")
    final: SparsityField | None = Field(
        None, description="the target sparsity from end on; None: the amount of the rule the schedule drives"
    )
    start: StepField = Field(0, description="the first pruning step")
    end: StepField = Field(description="the last pruning step, from which the target is final")
    every: int = Field(1, ge=1, description="steps from one pruning step to the next (end always prunes)")

    def __init__(self, **params: Any) -> None:
        """Validate ``params``; raise :class:`~pruneplug.InvalidScheduleError` naming each problem."""
        try:
            super().__init__(**params)
        except ValidationError as error:
            raise _invalid(type(self), error) from None

    # --- validation ---------------------------------------------------------------------------

    @model_validator(mode="before")
    @classmethod
    def _fill_in(cls, data: Any) -> Any:
        """Refuse the fields the schedule fills in itself, then let it fill them (:meth:`derive`)."""
        if not isinstance(data, dict):
            return data
        given = [field for field in cls.not_taken if field in data]
        if given:
            raise PydanticCustomError(
                "not_taken",
                "{fields} cannot be given: this schedule sets {them} itself ({why})",
                {
                    "fields": ", ".join(repr(field) for field in given),
                    "them": "it" if len(given) == 1 else "them",
                    "why": cls.not_taken_reason(),
                },
            )
        return cls.derive(dict(data))

    @classmethod
    def derive(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Fill in the :attr:`not_taken` fields from the given ones (before validation); the base fills none."""
        return data

    @classmethod
    def not_taken_reason(cls) -> str:
        """Why the :attr:`not_taken` fields cannot be given, for the error message."""
        return "they follow from the other parameters"

    @model_validator(mode="after")
    def _check_order(self) -> Schedule:
        if self.end < self.start:
            raise PydanticCustomError(
                "schedule_order", "end={end} is before start={start}", {"end": self.end, "start": self.start}
            )
        if self.final is not None and self.initial > self.final:
            raise PydanticCustomError(
                "schedule_order",
                "initial={initial} is above final={final}: a schedule only ever prunes more",
                {"initial": self.initial, "final": self.final},
            )
        return self

    # --- what subclasses give -----------------------------------------------------------------

    @abstractmethod
    def sparsity(self, step: int, initial: float, final: float) -> float:
        """The target sparsity at pruning step ``step``, ``start <= step < end``, ramping ``initial`` to ``final``.

        :meth:`at` calls it only for such steps (before ``start`` the target
        is ``initial``, from ``end`` on ``final``), with ``final`` resolved
        (this schedule's, or the one :meth:`at` was given). It must be
        non-decreasing in ``step``; :meth:`at` clamps what it returns into
        ``[initial, final]``. :meth:`progress` gives the fraction of the
        way from ``start`` to ``end``.
        """

    # --- what callers use ---------------------------------------------------------------------

    def progress(self, step: int) -> float:
        """``(step - start) / (end - start)``: the fraction of the way from ``start`` to ``end`` (1.0 if they meet)."""
        if self.end == self.start:
            return 1.0
        return (step - self.start) / (self.end - self.start)

    def resolve_final(self, final: float | None = None) -> float:
        """The final sparsity: this schedule's own, else ``final`` (checked to be in [0, 1) and >= ``initial``).

        Raises:
            InvalidScheduleError: the schedule has no ``final`` and none is
                given, or the one given is not a sparsity or is below ``initial``.
        """
        if self.final is not None:
            return self.final
        if final is None:
            raise InvalidScheduleError(
                "it has no final sparsity of its own (final=None), so at(step, final=...) needs one: "
                "the amount of the rule it drives",
                schedule=self.name,
            )
        if isinstance(final, bool) or not isinstance(final, numbers.Real) or not 0.0 <= float(final) < 1.0:
            raise InvalidScheduleError(
                f"final={final!r} is not a sparsity: a fraction in [0, 1) of the entries pruned in all",
                schedule=self.name,
            )
        if float(final) < self.initial:
            raise InvalidScheduleError(
                f"final={final!r} is below initial={self.initial}: a schedule only ever prunes more",
                schedule=self.name,
            )
        return float(final)

    def at(self, step: int, final: float | None = None) -> float:
        """The target sparsity at training step ``step``: the fraction of the entries pruned in all.

        ``initial`` before ``start``; exactly the final sparsity from ``end``
        on; in between, :meth:`sparsity` of the last pruning step at or
        before ``step`` (held until the next one). ``final`` is used only
        when the schedule has no ``final`` of its own (see :meth:`resolve_final`).

        Raises:
            InvalidScheduleError: ``step`` is not an int >= 0, or the final
                sparsity is missing or invalid.
        """
        step = self._checked_step(step)
        resolved = self.resolve_final(final)
        if step >= self.end:
            return resolved
        if step < self.start:
            return self.initial
        last = self.start + (step - self.start) // self.every * self.every
        value = float(self.sparsity(last, self.initial, resolved))
        if math.isnan(value):
            raise InvalidScheduleError(f"sparsity(step={last}) returned nan", schedule=self.name)
        return min(max(value, self.initial), resolved)

    def prunes_at(self, step: int) -> bool:
        """Whether ``step`` is a pruning step: ``start <= step <= end`` on the grid of ``every``, or ``end``.

        Raises:
            InvalidScheduleError: ``step`` is not an int >= 0.
        """
        step = self._checked_step(step)
        return self.start <= step <= self.end and ((step - self.start) % self.every == 0 or step == self.end)

    def steps(self) -> list[int]:
        """Every pruning step, in order: ``start``, ``start + every``, ..., and ``end``."""
        return [*range(self.start, self.end, self.every), self.end]

    def preview(self, final: float | None = None) -> list[tuple[int, float]]:
        """``(step, target sparsity)`` at every pruning step (``final`` as for :meth:`at`)."""
        return [(step, self.at(step, final)) for step in self.steps()]

    def to_spec(self) -> dict[str, Any]:
        """The mapping form, ``{"name": ..., **parameters}``, that ``pruneplug.make_schedule`` turns back into it."""
        return {"name": self.name, **self.model_dump(mode="json", exclude=set(self.not_taken))}

    def describe(self) -> str:
        """``cubic(initial=0.0, final=0.9, start=0, end=1000, every=10)``: the name and the parameters given."""
        spec = self.to_spec()
        del spec["name"]
        return f"{self.name}({', '.join(f'{key}={value!r}' for key, value in spec.items())})"

    def _checked_step(self, step: object) -> int:
        if isinstance(step, bool) or not isinstance(step, numbers.Integral):
            raise InvalidScheduleError(
                f"a step must be an int (the count of optimizer steps taken), got {type(step).__name__} {step!r}",
                schedule=self.name,
            )
        if step < 0:
            raise InvalidScheduleError(f"step={step} is negative; steps count from 0", schedule=self.name)
        return int(step)


def _invalid(cls: type[Schedule], error: ValidationError) -> InvalidScheduleError:
    """``error`` as an :class:`InvalidScheduleError` naming the schedule and each field at fault."""
    fields = [name for name in cls.model_fields if name not in cls.not_taken]
    problems = []
    for item in error.errors(include_url=False):
        location = ".".join(str(part) for part in item.get("loc", ()))
        kind = item.get("type")
        if kind == "extra_forbidden":
            hint = close_matches_hint(location, fields)
            problems.append(f"unknown parameter {location!r}.{hint} Accepted parameters: {', '.join(fields)}")
        elif kind == "missing":
            problems.append(f"missing required parameter {location!r}")
        elif location:
            problems.append(f"{location}: {item.get('msg')} (got {item.get('input')!r})")
        else:
            problems.append(str(item.get("msg")))
    return InvalidScheduleError(
        "invalid parameters: " + "; ".join(problems),
        schedule=getattr(cls, "name", cls.__name__),
        errors=[dict(item) for item in error.errors(include_url=False)],
    )


def schedule_class(item: object) -> type[Schedule]:
    """``item`` if it is a concrete, named :class:`Schedule` subclass (what ``pruneplug_add_schedules`` hands over).

    Raises:
        TypeError: not a subclass of :class:`Schedule`, or an abstract one.
        ValueError: its ``name`` is missing or not lowercase letters, digits
            and underscores starting with a letter.
    """
    if not (inspect.isclass(item) and issubclass(item, Schedule)):
        raise TypeError(f"expected a subclass of pruneplug.Schedule, got {item!r}")
    if inspect.isabstract(item):
        missing = ", ".join(sorted(getattr(item, "__abstractmethods__", ())))
        raise TypeError(f"schedule class {item.__qualname__} is abstract: implement {missing}")
    name = getattr(item, "name", None)
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise ValueError(f"schedule name {name!r} of {item.__qualname__} must be {NAME_PATTERN_TEXT}")
    return item
