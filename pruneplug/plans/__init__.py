"""Declarative pruning plans: rules in a TOML, YAML or JSON file, applied all or nothing.

::

    from pruneplug.plans import apply_plan, load_plan
    report = apply_plan(model, load_plan("plan.toml"))   # or apply_plan(model, "plan.toml")
    print(report.totals.sparsity)

A plan is a list of rules applied in order. Each rule selects tensors
(module names by glob or regex, module types, tensor names), names a
strategy with its parameters -- validated by the strategy's own pydantic
model -- and a scope: ``local`` (each tensor on its own) or ``global`` (all
selected tensors pooled). A rule with ``channels = true`` prunes coupled
channel groups instead (:func:`pruneplug.prune_channels`), tracing the model
on the plan's ``example_input``; ``compact = true`` then removes the pruned
channels for real (:func:`pruneplug.compact`), and the :class:`PlanReport`
says what that gave. A data-aware rule (``wanda``, ``sparsegpt``) runs on the
batches the plan's ``calibration`` section names (:class:`CalibrationSource`,
a ``MODULE:FUNCTION``), through :func:`pruneplug.prune_calibrated`, one call
per rule, in order. A plan's ``schedule`` (and a rule's own) is for
:class:`pruneplug.Pruner`, which follows it while a model trains;
:func:`apply_plan` prunes such a rule at once to its final sparsity, the
schedule's end state. Anything wrong raises :class:`PlanError` naming the
file, the rule and the field, and leaves the model unchanged. See
``docs/plans.md``.
"""

from __future__ import annotations

from ._apply import PlanLike as PlanLike, Progress as Progress, apply_plan as apply_plan
from ._calibration import CalibrationSource as CalibrationSource
from ._errors import PlanError as PlanError
from ._formats import (
    FORMATS as FORMATS,
    Format as Format,
    dump_plan as dump_plan,
    dumps_plan as dumps_plan,
    format_for as format_for,
    load_plan as load_plan,
    loads_plan as loads_plan,
    plan_data as plan_data,
)
from ._inputs import INPUT_DTYPES as INPUT_DTYPES, ExampleInput as ExampleInput, example_tensor as example_tensor
from ._model import PLAN_VERSION as PLAN_VERSION, Plan as Plan, Rule as Rule, Scope as Scope, parse_plan as parse_plan
from ._report import PlanReport as PlanReport
from ._resolve import ResolvedRule as ResolvedRule, Target as Target, resolve_plan as resolve_plan
from ._schedules import (
    ScheduleSpec as ScheduleSpec,
    final_sparsity as final_sparsity,
    scheduled_params as scheduled_params,
)
from ._schema import plan_schema as plan_schema

__all__ = [
    "Plan",
    "Rule",
    "Scope",
    "PlanError",
    "PLAN_VERSION",
    "FORMATS",
    "Format",
    "parse_plan",
    "load_plan",
    "loads_plan",
    "dump_plan",
    "dumps_plan",
    "plan_data",
    "format_for",
    "apply_plan",
    "PlanReport",
    "ExampleInput",
    "INPUT_DTYPES",
    "example_tensor",
    "CalibrationSource",
    "PlanLike",
    "Progress",
    "resolve_plan",
    "ResolvedRule",
    "Target",
    "plan_schema",
    "ScheduleSpec",
    "final_sparsity",
    "scheduled_params",
]
