"""The one error type of plans, and its translation from pydantic's errors.

Whatever is wrong with a plan -- a file that does not parse, a typo in a
field, a strategy that is not installed, parameters its model rejects, a
selector that matches nothing, an amount that does not fit, a prune that
fails half-way -- surfaces as one :class:`PlanError` naming *where*: the file,
the rule's index and the field (``plan.toml: rules[2].params.amount: ...``).
A plan with several problems gets one error listing every one found, a line
each, so a user fixes them all in one go (a rule's parameters are checked
once its other fields are valid, so a bad field can hide bad parameters). pydantic's wording is turned into the
plan's (``must be 'local' or 'global', got 'nowhere'``). It is a
:class:`~pruneplug.PruneplugError` and a :class:`ValueError`, so
``except pruneplug.PruneplugError`` and ``except ValueError`` both catch it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticCustomError

from ..errors import PruneplugError, close_matches_hint

__all__ = [
    "PlanError",
    "Problem",
    "custom_problem",
    "from_validation_error",
    "location_text",
    "plain_message",
    "tensor_error",
]

Problem = tuple[str, str]
"""``(location, message)`` of one problem, e.g. ``("rules[0].stratgy", "unknown field ...")``."""


def location_text(source: str | None, rule: int | None, field: str | None) -> str:
    """``plan.toml: rules[2].params.amount`` (the parts that are known).

    >>> location_text("plan.toml", 2, "params.amount")
    'plan.toml: rules[2].params.amount'
    >>> location_text(None, None, "rules")
    'rules'
    """
    path = f"rules[{rule}]" if rule is not None else ""
    if field:
        path = f"{path}.{field}" if path else field
    return ": ".join(part for part in (source, path) if part)


class PlanError(PruneplugError, ValueError):
    """A plan cannot be read, validated or applied; the model is unchanged.

    Attributes:
        source: the plan file (or another name of where the plan came from), when known.
        rule: index of the rule at fault in ``rules`` (0-based), when one is.
        field: the field within the rule (or plan) at fault, e.g. ``"params.amount"``.
        problems: every problem found, as ``(location, message)`` pairs; the
            message lists them all, one line each, the first one in full.
    """

    def __init__(
        self,
        reason: str,
        *,
        source: str | None = None,
        rule: int | None = None,
        field: str | None = None,
        problems: Sequence[Problem] = (),
        **context: str | None,
    ) -> None:
        self.source = source
        self.rule = rule
        self.field = field
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__(reason, **context)

    @property
    def location(self) -> str:
        """Where the problem is: ``"plan.toml: rules[2].params.amount"`` (may be empty)."""
        return location_text(self.source, self.rule, self.field)

    def _render(self) -> str:
        text = super()._render()
        where = location_text(getattr(self, "source", None), getattr(self, "rule", None), getattr(self, "field", None))
        if where:
            text = f"{where}: {text}"
        # One line per problem, each naming the file as the first does: every line stands on its own
        # (as compilers print errors), and a line-oriented reader -- grep, an editor -- finds each.
        source = getattr(self, "source", None)
        for location, message in getattr(self, "problems", ())[1:]:
            text += "\n" + ": ".join(part for part in (source, location, message) if part)
        return text

    def locate(self, *, source: str | None = None, rule: int | None = None) -> PlanError:
        """Fill in the file and rule when they are still unknown; returns ``self``."""
        if self.source is None:
            self.source = source
        if self.rule is None:
            self.rule = rule
        self.args = (self._render(),)
        return self


def _field_path(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        if part == "[key]":  # pydantic's marker for a bad mapping key (not a field)
            text += " (the key)"
        elif isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def plain_message(error: dict[str, Any]) -> str:
    """One pydantic error (a dict of ``ValidationError.errors()``) in a plan's words, with the value given.

    pydantic says ``Input should be 'local' or 'global'`` and ``Tuple should
    have at least 1 item after validation, not 0``; a plan's reader needs
    ``must be 'local' or 'global', got 'nowhere'`` and ``must list at least 1 item``.

    >>> plain_message({"type": "literal_error", "msg": "Input should be 'a' or 'b'", "input": "c"})
    "must be 'a' or 'b', got 'c'"
    """
    kind = str(error.get("type", ""))
    ctx = error.get("ctx") or {}
    if "message" in ctx:  # the plan's own checks already speak plainly
        return str(ctx["message"])
    if kind == "too_short" or kind == "too_long":
        bound = ctx.get("min_length" if kind == "too_short" else "max_length", 1)
        limit = "at least" if kind == "too_short" else "at most"
        return f"must list {limit} {bound} item{'' if bound == 1 else 's'}, got {ctx.get('actual_length', '?')}"
    text = str(error.get("msg", "invalid value"))
    text = re.sub(r"^Value error, ", "", text)
    text = re.sub(r"^(Input|Tuple|List|Dictionary) should ", "must ", text)
    text = text.replace("a valid tuple", "a list").replace("a valid dictionary", "a table/mapping")
    if kind.endswith("_parsing"):  # "must be a valid integer, unable to parse string ...": the first half says it
        text = text.split(", ")[0]
    given = error.get("input")
    if text.startswith("must ") and isinstance(given, (str, int, float, bool)) and len(repr(given)) <= 60:
        text += f", got {given!r}"
    return text


def _message(error: dict[str, Any], known_fields: Sequence[str]) -> str:
    kind = error.get("type")
    loc = error.get("loc", ())
    name = str(loc[-1]) if loc else ""
    if kind == "extra_forbidden":
        accepted = ", ".join(known_fields)
        return f"unknown field {name!r}.{close_matches_hint(name, known_fields)} Fields: {accepted}"
    if kind == "missing":
        return f"missing required field {name!r}"
    if kind == "too_short" and name == "rules" and len(loc) == 1:
        return "a plan needs at least 1 rule; this one has none"
    return plain_message(error)


def custom_problem(
    kind: str, field: str, message: str, problems: list[tuple[str, str]] | None = None
) -> PydanticCustomError:
    """A plan check's problem for pydantic to report (:func:`from_validation_error` reads it back).

    ``kind`` is pydantic's error type (``"plan_rule"``, ``"plan_schedule"``); ``field`` where it is, relative to
    the model that raises it (may be empty); ``problems`` lists several, each ``(field, message)``.
    """
    ctx: dict[str, Any] = {"field": field, "message": message}
    if problems:
        ctx["problems"] = problems
    return PydanticCustomError(kind, "{message}", ctx)


def tensor_error(error: PruneplugError, tensor: str, *, rule: int, field: str) -> PlanError:
    """A core error met while a rule pruned ``tensor`` (its qualified name), as a :class:`PlanError`.

    The core names the tensor as its module knows it (``Linear.weight``); in a
    plan the qualified name says which one, so the two are said once, together:
    ``fc3.weight (Linear), strategy 'l1_unstructured': ...``.
    """
    where = f"{tensor} ({error.module_type})" if error.module_type is not None else tensor
    if error.strategy is not None:
        where += f", strategy {error.strategy!r}"
    return PlanError(f"{where}: {error.reason}", rule=rule, field=field)


def from_validation_error(
    error: ValidationError,
    *,
    source: str | None = None,
    plan_fields: Sequence[str] = (),
    rule_fields: Sequence[str] = (),
    section_fields: Mapping[str, Sequence[str]] | None = None,
) -> PlanError:
    """One :class:`PlanError` for every problem pydantic found, located by rule and field.

    ``plan_fields`` and ``rule_fields`` are the accepted field names, listed
    (with close matches) when a field is unknown; ``section_fields`` those of
    the plan's sections (``{"calibration": ("batches", ...)}``).
    """
    problems: list[tuple[int | None, str, str]] = []
    raw_errors: list[dict[str, Any]] = [dict(raw) for raw in error.errors(include_url=False)]
    for item in raw_errors:
        loc = tuple(item.get("loc", ()))
        if item.get("type") == "too_short" and any(
            len(other.get("loc", ())) > len(loc) and tuple(other["loc"][: len(loc)]) == loc for other in raw_errors
        ):
            continue  # a list is 'too short' only because its items failed: report those
        rule: int | None = None
        rest: tuple[Any, ...] = loc
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            rule, rest = loc[1], loc[2:]
        if rule is not None and len(rest) == 1:
            fields = rule_fields
        elif rule is None and len(rest) == 2 and section_fields and str(rest[0]) in section_fields:
            fields = section_fields[str(rest[0])]
        else:
            fields = plan_fields
        ctx = item.get("ctx") or {}
        # A rule's own check may find several problems (say, in its params): each is a problem of its own. The
        # plan's checks of its rules name the rule in the context: (field, message, rule).
        found = ctx.get("problems") or [(ctx.get("field", ""), _message(item, fields), ctx.get("rule"))]
        for extra, message, *at in found:
            field = _field_path([*rest, *(str(extra).split(".") if extra else [])])
            problems.append((rule if rule is not None or not at else at[0], field, message))
    if not problems:  # pragma: no cover - pydantic always reports at least one
        return PlanError("invalid plan", source=source)
    # By rule; within one, unknown fields first: a typo ('stratgy') explains the missing field it causes.
    order = {rule: position for position, (rule, _, _) in reversed(list(enumerate(problems)))}
    problems.sort(key=lambda p: (order[p[0]], not p[2].startswith("unknown field")))
    rule, field, message = problems[0]
    listed = [(location_text(None, r, f), m) for r, f, m in problems]
    return PlanError(message, source=source, rule=rule, field=field or None, problems=listed)
