"""What a plan is: pydantic models of rules and plans, frozen, with no unknown fields.

A :class:`Plan` is an ordered list of :class:`Rule` s. A rule *selects*
tensors (module names by glob or regex, module types, tensor names), *names*
a strategy and its parameters, and has a *scope*: ``local`` prunes each
selected tensor on its own, ``global`` pools them all through
:func:`pruneplug.prune_global`.

Validation happens here, before a plan ever meets a model: unknown fields
(typos) are rejected with the closest field named, the strategy must be
registered, and its parameters are validated by that strategy's own pydantic
model -- plugin strategies included, looked up in the current registry. A
rule naming a strategy by a deprecated name holds its current name.
What depends on the model (does a selector match anything? does the amount
fit?) is checked by :mod:`pruneplug.plans._resolve` before anything is pruned.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..errors import InvalidParametersError, PruneplugError, cross_tensor_hint
from ..params import _describe_error as describe_param_error
from ..registry import StrategySpec, get_registry
from ..storage.formats import MaskStorage
from ._errors import PlanError, from_validation_error, plain_message

__all__ = ["Plan", "Rule", "RuleSelection", "Scope", "PLAN_VERSION", "parse_plan", "strategy_for"]

PLAN_VERSION = 1

Scope = Literal["local", "global"]

Name = Annotated[str, StringConstraints(strict=True, min_length=1)]


Names = tuple[Name, ...]


class RuleSelection(BaseModel):
    """Which tensors a rule acts on, and how (shared by :class:`Rule` and the JSON Schema).

    A module is selected when it passes every filter that is given; then
    each of its parameters named in ``tensors`` is selected.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    description: str | None = Field(default=None, description="What the rule is for (shown in reports).")
    modules: Names | None = Field(
        default=None,
        min_length=1,
        description="Globs on qualified module names (fnmatch; '*' crosses dots): 'conv*', 'layer1.*'. "
        "Default: every module.",
    )
    module_regex: Name | None = Field(
        default=None, description="A regular expression the whole qualified module name must match."
    )
    types: Names | None = Field(
        default=None,
        min_length=1,
        description="Module class names, e.g. 'Conv2d', 'Linear' or 'torch.nn.Linear' "
        "(a subclass matches its bases' names).",
    )
    exclude: Names = Field(default=(), description="Globs on qualified module names to leave out.")
    tensors: Names = Field(default=("weight",), min_length=1, description="Parameter names within each module.")
    scope: Scope = Field(
        default="local",
        description="'local': each selected tensor pruned on its own; "
        "'global': all selected tensors pooled (pruneplug.prune_global).",
    )
    optional: StrictBool = Field(
        default=False, description="Skip the rule, instead of failing, when it selects nothing."
    )

    @field_validator("module_regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:
                raise PydanticCustomError(
                    "regex", "not a valid regular expression: {error}", {"error": str(error)}
                ) from None
        return value

    @field_validator("tensors")
    @classmethod
    def _plain_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        dotted = [name for name in value if "." in name]
        if dotted:
            raise PydanticCustomError(
                "tensor_name",
                "tensor names are parameter names within a module, without dots (got '{name}'); "
                "select the module with 'modules' instead",
                {"name": dotted[0]},
            )
        return value


def strategy_for(name: str) -> StrategySpec:
    """The registered strategy ``name`` (raises :class:`~pruneplug.StrategyNotFoundError`)."""
    return get_registry().get(name)


class Rule(RuleSelection):
    """One step of a plan: a selection, a strategy and its parameters.

    >>> Rule(strategy="l1_unstructured", types=["Linear"], params={"amount": 0.3}).scope
    'local'
    """

    strategy: Name = Field(description="A registered strategy name (see `pruneplug list`).")
    params: dict[Name, Any] = Field(
        default_factory=dict, description="The strategy's parameters, validated by its own model."
    )

    @model_validator(mode="before")
    @classmethod
    def _current_name(cls, data: Any) -> Any:
        """A deprecated strategy name becomes the strategy's current name, with one warning, as the rule is read."""
        if isinstance(data, Mapping) and isinstance(data.get("strategy"), str):
            try:
                current = strategy_for(data["strategy"]).name  # warns for a deprecated name
            except PruneplugError:
                return data  # reported, with the rule's other problems, by _check_strategy
            if current != data["strategy"]:
                return {**data, "strategy": current}
        return data

    @model_validator(mode="after")
    def _check_strategy(self) -> Rule:
        try:
            spec = strategy_for(self.strategy)
        except PruneplugError as error:
            raise _problem("strategy", error.reason) from None
        try:
            spec.validate(dict(self.params))
        except InvalidParametersError as error:
            raise _problem(*_params_problems(error, list(spec.params_model.model_fields))) from None
        if self.scope == "global" and spec.kind != "unstructured":
            raise _problem(
                "scope",
                "scope 'global' ranks the entries of all selected tensors together, which needs a strategy "
                f"of kind 'unstructured'; {cross_tensor_hint(spec.name, spec.kind)}. "
                "Use scope 'local' to prune each selected tensor on its own",
            )
        return self


def _problem(field: str, message: str, problems: list[tuple[str, str]] | None = None) -> PydanticCustomError:
    """A rule's problem for pydantic to report; ``problems`` lists several, each ``(field, message)``."""
    ctx: dict[str, Any] = {"field": field, "message": message}
    if problems:
        ctx["problems"] = problems
    return PydanticCustomError("plan_rule", "{message}", ctx)


def _params_problems(error: InvalidParametersError, fields: list[str]) -> tuple[str, str, list[tuple[str, str]]]:
    """The field (``params.amount``) and message of the parameters' first problem, and every problem."""
    if not error.errors:
        return "params", error.reason, []
    problems = []
    for item in error.errors:
        loc = item.get("loc")
        field = "params." + ".".join(str(part) for part in loc) if isinstance(loc, tuple) and loc else "params"
        kind = item.get("type")
        message = describe_param_error(item, fields) if kind in ("missing", "extra_forbidden") else plain_message(item)
        problems.append((field, message))
    return problems[0][0], problems[0][1], problems


class Plan(BaseModel):
    """A pruning plan: rules applied in order (later rules see earlier rules' masks).

    >>> plan = Plan(rules=[Rule(strategy="l1_unstructured", scope="global", params={"amount": 0.2})])
    >>> len(plan.rules)
    1
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    schema_: str | None = Field(
        default=None, alias="$schema", description="Where editors find this schema (`pruneplug schema`); ignored."
    )
    version: Literal[1] = Field(default=1, description="The plan format's version.")
    description: str | None = Field(default=None, description="What the plan is for.")
    mask_storage: MaskStorage | None = Field(
        default=None,
        description="How the masks of the tensors the plan prunes are stored: 'bool' (a byte per entry) or "
        "'packed' (a bit per entry, for large models). Default: as they are, 'bool' for tensors not pruned yet.",
    )
    rules: tuple[Rule, ...] = Field(min_length=1, description="Applied in order.")


PLAN_FIELDS = tuple((info.alias or name) for name, info in Plan.model_fields.items())  # as written in files
RULE_FIELDS = tuple(Rule.model_fields)


def parse_plan(data: object, *, source: str | None = None) -> Plan:
    """Validate plan data (as read from a file) into a :class:`Plan`; raise :class:`PlanError` otherwise.

    A :class:`Plan` is returned as it is; a mapping is validated (field
    names, strategies and their parameters). ``source`` names the file in
    error messages.
    """
    if isinstance(data, Plan):
        return data
    if not isinstance(data, dict):
        if isinstance(data, Mapping):
            data = dict(data)
        else:
            raise PlanError(f"a plan is a table/mapping with a 'rules' list, got {type(data).__name__}", source=source)
    try:
        return Plan.model_validate(data)
    except ValidationError as error:
        raise from_validation_error(error, source=source, plan_fields=PLAN_FIELDS, rule_fields=RULE_FIELDS) from None
