"""Schedules in plans: a rule's (or the plan's) ``schedule``, and what it makes of the rule's amount.

A plan may give every rule a default schedule (the plan's ``schedule``) and
each rule its own (the rule's ``schedule``, which wins). Either is the
mapping form of a registered schedule, ``{"name": "cubic", "final": 0.9,
"end": 1000}``, validated by that schedule's own pydantic model when the plan
is read, so that a typo fails before training starts. The plan holds the
mapping as written, not the :class:`~pruneplug.Schedule` it makes: a plan
written back says what its file said (an int stays an int, a parameter left
out stays out), and a ``None`` that only restates a default (``final: null``)
is dropped, since TOML cannot write it. In Python a
:class:`~pruneplug.Schedule` (or a bare name) is accepted too and held as its
mapping, defaults left out.

The rule's ``params.amount`` is its *final sparsity* unless the schedule has
a ``final`` of its own, which wins; a rule whose schedule gives ``final``
may then leave the amount out (:func:`scheduled_params` fills it in). A
schedule without ``final`` needs the amount to be a fraction in [0, 1), not
below the schedule's ``initial`` (:func:`final_sparsity`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator

from ..api.schedules import make_schedule
from ..errors import InvalidScheduleError, PruneplugError
from ..params import _describe_error as describe_param_error
from ..registry import StrategySpec, get_registry
from ..schedules.base import Schedule
from ._errors import PlanError, custom_problem, plain_message

__all__ = [
    "ScheduleSpec",
    "final_sparsity",
    "lenient_schedule",
    "scheduled_params",
    "schedule_from",
    "spec_of",
    "takes_amount",
]


def spec_of(schedule: Schedule) -> dict[str, Any]:
    """The mapping form of ``schedule`` with its defaults left out: ``{"name": "cubic", "end": 100}``."""
    fields = schedule.model_dump(mode="json", exclude=set(schedule.not_taken), exclude_defaults=True)
    return {"name": schedule.name, **fields}


def _as_mapping(value: object) -> object:
    """A :class:`~pruneplug.Schedule` or a bare name as its mapping form; a mapping as a dict."""
    if isinstance(value, Schedule):
        return spec_of(value)
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, Mapping):
        return dict(value)
    return value


def _checked(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` once the registered schedule's model accepts it, with ``None`` s that restate a default dropped."""
    try:
        schedule = make_schedule(spec)
    except InvalidScheduleError as error:
        if not error.errors:  # no 'name', or not a mapping's problem: the message says it all
            raise custom_problem("plan_schedule", "name" if "name" not in spec else "", error.reason) from None
        fields = _fields(spec.get("name"))
        problems = []
        for item in error.errors:
            loc = item.get("loc")
            field = ".".join(str(part) for part in loc) if isinstance(loc, tuple) else ""
            kind = item.get("type")
            if kind in ("missing", "extra_forbidden"):
                message = describe_param_error(item, fields)
            else:
                message = plain_message(item)
            problems.append((field, message))
        raise custom_problem("plan_schedule", *problems[0], problems=problems) from None
    except PruneplugError as error:  # no such schedule (the registered ones listed), or two plugins claim it
        raise custom_problem("plan_schedule", "name", error.reason) from None
    defaults = type(schedule).model_fields
    return {
        key: value
        for key, value in spec.items()
        if not (value is None and key in defaults and defaults[key].default is None)
    }


def _fields(name: object) -> list[str]:
    """The parameters the schedule ``name`` takes (those it sets itself left out)."""
    try:
        cls = get_registry().get_schedule(name)  # type: ignore[arg-type]
    except PruneplugError:  # pragma: no cover - make_schedule found it a moment ago
        return []
    return [field for field in cls.model_fields if field not in cls.not_taken]


ScheduleSpec = Annotated[dict[str, Any], BeforeValidator(_as_mapping), AfterValidator(_checked)]
"""A schedule's mapping form, ``{"name": "cubic", ...}``, checked against the registered schedule's model."""


def schedule_from(spec: Mapping[str, Any] | None) -> Schedule | None:
    """The :class:`~pruneplug.Schedule` a plan's (validated) schedule mapping describes; ``None`` for none."""
    return None if spec is None else make_schedule(spec)


def final_sparsity(schedule: Schedule, amount: object) -> float:
    """The final sparsity of a rule with ``params.amount`` ``amount`` (``None``: none) driven by ``schedule``.

    The schedule's own ``final`` if it has one, else the amount, which must
    then be a fraction in [0, 1) and not below the schedule's ``initial``.

    >>> from pruneplug import make_schedule
    >>> final_sparsity(make_schedule("linear", end=10), 0.5)
    0.5
    >>> final_sparsity(make_schedule("linear", final=0.8, end=10), 3)  # the schedule's final wins
    0.8

    Raises:
        PlanError: naming the field (``params.amount``) and why.
    """
    if schedule.final is not None:
        return schedule.final
    if not isinstance(amount, float):
        given = "no amount" if amount is None else f"{amount!r}"
        raise PlanError(
            f"with a schedule, the rule's amount is its final sparsity, a fraction in [0, 1); got {given} "
            f"(or give the schedule {schedule.name!r} a final of its own)",
            field="params.amount",
        )
    try:
        return schedule.resolve_final(amount)
    except InvalidScheduleError as error:
        raise PlanError(str(error), field="params.amount") from error


def takes_amount(spec: StrategySpec) -> bool:
    """Whether the strategy takes an ``amount``, which a schedule can set (``identity`` and ``nm`` do not)."""
    return "amount" in spec.params_model.model_fields


def scheduled_params(spec: StrategySpec, params: Mapping[str, Any], schedule: Schedule | None) -> dict[str, Any]:
    """``params`` with the amount a schedule gives: its ``final`` when it has one, else as they are.

    What a one-shot application prunes (the schedule's end state), and what
    a rule that left its amount out to its schedule's ``final`` is validated
    with. A strategy that takes no amount keeps its parameters.
    """
    out = dict(params)
    if schedule is not None and schedule.final is not None and takes_amount(spec):
        out["amount"] = schedule.final
    return out


def lenient_schedule(value: object) -> Schedule | None:
    """The schedule ``value`` describes, as a plan's field would take it; ``None`` if it is invalid or missing.

    (For the plan's rules while the plan is validated: an invalid schedule is reported as the plan's own field.)
    """
    if value is None:
        return None
    try:
        return make_schedule(_as_mapping(value))  # type: ignore[arg-type]
    except (PruneplugError, TypeError):
        return None
