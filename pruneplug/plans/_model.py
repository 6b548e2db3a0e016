"""What a plan is: pydantic models of rules and plans, frozen, with no unknown fields.

A :class:`Plan` is an ordered list of :class:`Rule` s. A rule *selects*
tensors (module names by glob or regex, module types, tensor names), *names*
a strategy and its parameters, and has a *scope*: ``local`` prunes each
selected tensor on its own, ``global`` pools them all through
:func:`pruneplug.prune_global`. A *channel rule* (``channels = true``) prunes
the coupled channel groups of the selected modules' outputs instead
(:func:`pruneplug.prune_channels`), with a structured strategy, no
``tensors`` and no ``dim``; the plan then needs an ``example_input``
(:class:`~pruneplug.plans.ExampleInput`), as ``compact = true`` does. A
plan's ``schedule``, and a rule's, say how :class:`pruneplug.Pruner` prunes
while a model trains (:mod:`pruneplug.plans._schedules`).

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
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..calibration.gradients import reads_gradients
from ..compaction.prune import GroupReduction
from ..errors import InvalidParametersError, PruneplugError, cross_tensor_hint
from ..params import _describe_error as describe_param_error
from ..registry import StrategySpec, get_registry
from ..schedules.base import Schedule
from ..statistics.spec import NeedsStatistics
from ..storage.formats import MaskStorage
from ._calibration import CalibrationSource
from ._errors import PlanError, custom_problem, from_validation_error, plain_message
from ._inputs import ExampleInput
from ._schedules import ScheduleSpec, final_sparsity, lenient_schedule, schedule_from, scheduled_params, takes_amount

__all__ = [
    "Plan",
    "Rule",
    "RuleSelection",
    "Scope",
    "Allocation",
    "PLAN_VERSION",
    "parse_plan",
    "strategy_for",
    "calibration_reason",
    "OWL_NOT_CALIBRATED",
]

PLAN_VERSION = 1

Scope = Literal["local", "global"]

Allocation = Literal["uniform", "owl"]
"""How a data-aware rule spreads its amount over its layers: the same for each, or OWL's per-block amounts."""

Name = Annotated[str, StringConstraints(strict=True, min_length=1)]


Names = tuple[Name, ...]


def _number(value: object) -> object:
    """A number as a file writes it: a string or a boolean, which pydantic would turn into one, is refused."""
    if isinstance(value, (bool, str, bytes)):
        raise PydanticCustomError("number", "must be a number")
    return value


class RuleSelection(BaseModel):
    """Which tensors a rule acts on, and how (shared by :class:`Rule` and the JSON Schema).

    A module is selected when it passes every filter that is given; then
    each of its parameters named in ``tensors`` is selected -- or, in a
    channel rule, the channel groups of its outputs.
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
        "'global': all selected tensors pooled (pruneplug.prune_global). "
        "A channel rule: each channel group on its own, or all ranked together.",
    )
    optional: StrictBool = Field(
        default=False, description="Skip the rule, instead of failing, when it selects nothing."
    )
    channels: StrictBool = Field(
        default=False,
        description="Prune coupled channel groups (pruneplug.prune_channels) instead of tensors: the output channels "
        "of the selected modules, with every tensor coupled to them. Needs a structured strategy and the plan's "
        "example_input; no 'tensors', no 'dim'.",
    )
    round_to: Annotated[StrictInt, Field(ge=1)] | None = Field(
        default=None, description="Channel rules: each group keeps a multiple of this many channels."
    )
    group_reduction: GroupReduction = Field(
        default="mean",
        description="Channel rules: how a channel's scores in the group's tensors are combined "
        "('mean', 'sum', 'max' or 'min').",
    )
    allocation: Allocation = Field(
        default="uniform",
        description="Data-aware rules (wanda, sparsegpt, ...): how params.amount is spread over the layers. "
        "'uniform': each layer prunes params.amount; 'owl': each block gets its own amount from the outliers of "
        "the dense model's Wanda metric, their mean params.amount (pruneplug.owl_amounts). The layers must lie "
        "in the blocks.",
    )
    owl_threshold: Annotated[float, Field(gt=0), BeforeValidator(_number)] | None = Field(
        default=None,
        description="allocation = 'owl': an entry of the Wanda metric is an outlier above this many times its "
        "block's mean (OWL's M). Default: 5.",
    )
    owl_spread: Annotated[float, Field(ge=0, le=1), BeforeValidator(_number)] | None = Field(
        default=None,
        description="allocation = 'owl': half the width of the range of the blocks' sparsities (OWL's lambda). "
        "Default: 0.08.",
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


def calibration_reason(method: object, *, loss: bool) -> str | None:
    """Why a configured strategy runs on calibration data, or ``None`` when it does not.

    It does when it needs statistics of its layers' inputs (``wanda``,
    ``sparsegpt``, a plugin's), or, when a loss is given (``loss``), when
    its score reads gradients (``taylor``).
    """
    if isinstance(method, NeedsStatistics):
        names = tuple(method.required_statistics())
        if names:
            plural = "s" if len(names) > 1 else ""
            return f"it needs the statistic{plural} {', '.join(names)} of its layers' inputs"
    if loss and reads_gradients(method):
        return f"its score {getattr(method, 'score', None)!r} reads gradients, computed with the calibration loss"
    return None


OWL_NOT_CALIBRATED = (
    "allocation = 'owl' is only for a rule that runs on calibration data (wanda, sparsegpt, a strategy that needs "
    "statistics of its layers' inputs, or the taylor score with the plan's calibration.loss)"
)
"""The start of the message refusing OWL on a rule that does not calibrate (here, and when a plan is resolved)."""


class Rule(RuleSelection):
    """One step of a plan: a selection, a strategy and its parameters.

    >>> Rule(strategy="l1_unstructured", types=["Linear"], params={"amount": 0.3}).scope
    'local'
    """

    strategy: Name = Field(description="A registered strategy name (see `pruneplug list`).")
    params: dict[Name, Any] = Field(
        default_factory=dict, description="The strategy's parameters, validated by its own model."
    )
    schedule: ScheduleSpec | None = Field(
        default=None,
        description="This rule's pruning schedule, over the plan's: {name = 'cubic', final = 0.9, end = 1000} "
        "(see `pruneplug list`). params.amount is the final sparsity unless the schedule gives final (the amount "
        "may then be left out). pruneplug.Pruner follows it while training; apply_plan prunes to its end state.",
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
    def _check_strategy(self, info: ValidationInfo) -> Rule:
        try:
            spec = strategy_for(self.strategy)
        except PruneplugError as error:
            raise custom_problem("plan_rule", "strategy", error.reason) from None
        problems = self._channel_problems(spec) if self.channels else []
        valid = True
        params = self._params_with_amount(spec, info)
        try:
            spec.validate(params)
        except InvalidParametersError as error:
            valid = False
            problems += _params_problems(error, list(spec.params_model.model_fields))[2] or [("params", error.reason)]
        problems += self._allocation_problems(spec, params, valid)
        if valid:
            problems += self._schedule_problems(spec)
        if problems:
            raise custom_problem("plan_rule", *problems[0], problems=problems)
        if self.channels:
            return self
        for field in ("round_to", "group_reduction"):
            if field in self.model_fields_set:
                raise custom_problem("plan_rule", field, f"{field} only applies to a channel rule (channels = true)")
        if self.scope == "global" and spec.kind != "unstructured":
            raise custom_problem(
                "plan_rule",
                "scope",
                "scope 'global' ranks the entries of all selected tensors together, which needs a strategy "
                f"of kind 'unstructured'; {cross_tensor_hint(spec.name, spec.kind)}. "
                "Use scope 'local' to prune each selected tensor on its own"
                + (", or channels = true to rank whole channel groups globally" if spec.kind == "structured" else ""),
            )
        return self

    def _params_with_amount(self, spec: StrategySpec, info: ValidationInfo) -> dict[str, Any]:
        """The parameters to validate: a left-out amount is the ``final`` of the rule's schedule (else the plan's).

        The plan's schedule reaches a rule only through :func:`parse_plan`'s
        validation context: a :class:`Rule` made on its own knows its own schedule alone.
        """
        if "amount" in self.params:
            return dict(self.params)
        schedule = schedule_from(self.schedule)
        if schedule is None and isinstance(info.context, Mapping):
            schedule = info.context.get("schedule")
        return scheduled_params(spec, self.params, schedule if isinstance(schedule, Schedule) else None)

    def _schedule_problems(self, spec: StrategySpec) -> list[tuple[str, str]]:
        """What keeps the rule's own schedule from setting its amount: each ``(field, message)``.

        (A rule that follows the plan's schedule is checked by the plan, which knows it.)
        """
        schedule = schedule_from(self.schedule)
        if schedule is None:
            return []
        if not takes_amount(spec):
            return [("schedule", f"{spec.name!r} takes no amount, which a schedule sets: leave the schedule out")]
        try:
            final_sparsity(schedule, self.params.get("amount"))
        except PlanError as error:
            return [(error.field or "params.amount", error.reason)]
        return []

    def _allocation_problems(self, spec: StrategySpec, params: dict[str, Any], valid: bool) -> list[tuple[str, str]]:
        """What keeps ``allocation`` and OWL's options from working here: each ``(field, message)``.

        ``params``: the parameters as validated (an amount a schedule gives
        filled in); ``valid``: whether they are (only then is the strategy
        made, to ask whether it calibrates).
        """
        if self.allocation != "owl":
            return [
                (name, f"{name} only applies with allocation = 'owl'")
                for name in ("owl_threshold", "owl_spread")
                if getattr(self, name) is not None
            ]
        if self.channels:
            return [("allocation", f"{OWL_NOT_CALIBRATED}; a channel rule does not: leave allocation out")]
        if not valid:
            return []
        try:
            method = spec.create(**params)
        except PruneplugError:  # reported when the rule is applied, with the field at fault
            return []
        if calibration_reason(method, loss=True) is None:
            return [("allocation", f"{OWL_NOT_CALIBRATED}; {spec.name!r} does not: leave allocation out")]
        problems = []
        if self.scope == "global":
            problems.append(
                (
                    "allocation",
                    "allocation = 'owl' gives each block its own amount, and scope 'global' ranks the entries of "
                    "all the layers together for one amount: use one or the other",
                )
            )
        amount = params.get("amount")
        if amount is None:
            problems.append(
                (
                    "allocation",
                    "allocation = 'owl' needs params.amount, the blocks' mean sparsity (a fraction in [0, 1]); "
                    "N:M (keep_n, of_m) fixes each layer's own",
                )
            )
        elif not isinstance(amount, float):
            problems.append(
                (
                    "params.amount",
                    "allocation = 'owl' spreads params.amount over the blocks, so it must be a fraction in [0, 1] "
                    f"(e.g. 0.5), got {amount!r}",
                )
            )
        return problems

    def _channel_problems(self, spec: StrategySpec) -> list[tuple[str, str]]:
        """What keeps this channel rule from working: each ``(field, message)``."""
        problems = []
        if spec.kind != "structured":
            problems.append(
                (
                    "strategy",
                    "a channel rule (channels = true) ranks whole channels, which needs a strategy of kind "
                    f"'structured'; {spec.name!r} is {spec.kind} (see `pruneplug list`: ln_structured, "
                    "random_structured, scored_structured ...)",
                )
            )
        if "tensors" in self.model_fields_set:
            problems.append(
                (
                    "tensors",
                    "a channel rule prunes every tensor coupled to the channels it selects (weights, biases, "
                    "norms, the next layers' inputs); leave 'tensors' out",
                )
            )
        for name, why in (
            ("dim", "the channel graph decides each tensor's dim"),
            ("prune_bias", "biases coupled to a channel are always pruned with it"),
        ):
            if name in self.params and name in spec.params_model.model_fields:  # else: an unknown parameter
                problems.append((f"params.{name}", f"a channel rule takes no {name!r}: {why}; leave it out"))
        return problems


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
    example_input: ExampleInput | None = Field(
        default=None,
        description="What the model is called with, for channel rules and compaction: "
        "{shape = [1, 3, 224, 224], dtype = 'float32', low = 0, high = 1}.",
    )
    compact: StrictBool = Field(
        default=False,
        description="After the rules, remove the pruned channels for real (pruneplug.compact): smaller tensors, "
        "checked to compute what the masked model did. Needs example_input.",
    )
    calibration: CalibrationSource | None = Field(
        default=None,
        description="Where the data of data-aware rules (wanda, sparsegpt, the taylor score with a loss) comes "
        "from: calibration = { batches = 'mypkg.data:calibration_batches' }. Those rules are applied through "
        "pruneplug.prune_calibrated, one call per rule, in order.",
    )
    schedule: ScheduleSpec | None = Field(
        default=None,
        description="The pruning schedule of every rule without its own: {name = 'cubic', final = 0.9, end = 1000} "
        "(see `pruneplug list`). pruneplug.Pruner follows it while training; apply_plan prunes each rule that has "
        "a schedule to its end state, the final sparsity, at once.",
    )
    rules: tuple[Rule, ...] = Field(min_length=1, description="Applied in order.")

    @model_validator(mode="after")
    def _check_schedule(self) -> Plan:
        """Each rule that follows the plan's schedule must give it a final sparsity (see :func:`final_sparsity`)."""
        schedule = schedule_from(self.schedule)
        if schedule is None:
            return self
        problems: list[tuple[str, str, int]] = []
        for index, rule in enumerate(self.rules):
            if rule.schedule is not None or not takes_amount(strategy_for(rule.strategy)):
                continue
            try:
                final_sparsity(schedule, rule.params.get("amount"))
            except PlanError as error:
                problems.append((error.field or "params.amount", error.reason, index))
        if problems:
            field, message, index = problems[0]
            raise PydanticCustomError(
                "plan_rule", "{message}", {"field": field, "message": message, "rule": index, "problems": problems}
            )
        return self

    def schedule_for(self, index: int) -> Schedule | None:
        """The schedule of rule ``index``: its own, else the plan's; ``None`` when neither has one.

        >>> plan = Plan(schedule={"name": "linear", "end": 10}, rules=[Rule(strategy="l1_unstructured",
        ...     params={"amount": 0.5}), Rule(strategy="l1_unstructured", schedule={"name": "one_shot", "final": 0.2})])
        >>> [plan.schedule_for(index).name for index in range(2)]
        ['linear', 'one_shot']
        """
        rule = self.rules[index]
        return schedule_from(rule.schedule if rule.schedule is not None else self.schedule)

    def end_state(self) -> Plan:
        """This plan with each scheduled rule's ``params.amount`` its final sparsity (see :func:`final_sparsity`).

        What the rules prune to at the end of their schedules, in one shot:
        what :func:`~pruneplug.plans.apply_plan` applies, and what
        :class:`pruneplug.Pruner` resolves against the model. Rules without a
        schedule, and those whose strategy takes no amount, are as they are.
        """
        rules = []
        for index, rule in enumerate(self.rules):
            schedule = self.schedule_for(index)
            if schedule is not None and takes_amount(strategy_for(rule.strategy)):
                final = final_sparsity(schedule, rule.params.get("amount"))
                rule = rule.model_copy(update={"params": {**rule.params, "amount": final}})
            rules.append(rule)
        return self.model_copy(update={"rules": tuple(rules)})


PLAN_FIELDS = tuple((info.alias or name) for name, info in Plan.model_fields.items())  # as written in files
RULE_FIELDS = tuple(Rule.model_fields)
SECTION_FIELDS = {
    "example_input": tuple(ExampleInput.model_fields),
    "calibration": tuple(CalibrationSource.model_fields),
}


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
        # The plan's schedule, for its rules to fill in an amount they leave to its final (see Rule).
        return Plan.model_validate(data, context={"schedule": lenient_schedule(data.get("schedule"))})
    except ValidationError as error:
        raise from_validation_error(
            error, source=source, plan_fields=PLAN_FIELDS, rule_fields=RULE_FIELDS, section_fields=SECTION_FIELDS
        ) from None
