"""Applying a plan to a model: all of it, or none of it.

1. The plan is validated (strategies, parameters) and every rule resolved
   against the model and checked (:mod:`~pruneplug.plans._resolve`) before
   any tensor is touched.
2. The rules are applied in order through the native API
   (:func:`pruneplug.prune` for ``local`` rules, :func:`pruneplug.prune_global`
   for ``global`` ones), each acting on what the rules before it left. Each
   prune is itself atomic; for the plan as a whole, every module a rule
   selects is snapshotted first (the core's own snapshot of parameters,
   buffers, hooks and attributes), and if a later rule fails every one of
   them is restored -- and torch's global CPU random generator rewound, so
   random strategies draw the same numbers on the next try.
3. A channel rule (``channels = true``) goes through
   :func:`pruneplug.prune_channels`, pruning exactly the channel groups the
   rule selects (:mod:`~pruneplug.plans._channels`); ``compact = true``
   then runs :func:`pruneplug.compact` after the last rule. Both reach
   beyond the modules a rule names (coupled layers, norms), so a plan with
   either snapshots every module of the model, and the values of its
   parameters, which compaction replaces in place.
4. A data-aware rule (``wanda``, ``sparsegpt``, a taylor score with the
   plan's loss; :mod:`~pruneplug.plans._calibrated`) goes through
   :func:`pruneplug.prune_calibrated`, one call per rule, on the batches the
   plan's ``calibration`` section names -- imported and called once, after
   every rule is resolved and before anything is pruned; the
   :class:`~pruneplug.CalibrationReport` each call returns goes into the
   plan's report (``calibration``, by the rule's index). A strategy that
   writes new values into the weights it keeps (``sparsegpt``) changes them
   in place, so their values are kept first (as ``prune_calibrated`` keeps
   them: in a temporary file for a model in CPU memory) whenever something
   could still have to undo the rule (a later rule, the compaction, a dry run).
5. A dry run does all of that and then restores the model regardless: a dry
   run with ``compact`` reports what compaction would give.
6. A rule with a schedule (its own or the plan's) is applied at once to the
   schedule's end state: its amount is its final sparsity, the schedule's
   ``final`` when it has one (:meth:`Plan.end_state`). The report lists those
   rules with their schedules (``schedules``); :class:`pruneplug.Pruner`
   follows the schedules while a model trains.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ..api import prune, prune_global
from ..calibration import CalibrationReport
from ..calibration.state import Rollback
from ..compaction import CompactionReport, compact as compact_model, prune_channels
from ..compaction.trace import ExampleInputs
from ..core.commit import ModuleSnapshot
from ..core.state import default_alive, tensor_state
from ..errors import (
    ChannelTraceError,
    IncompatibleStrategyError,
    InvalidAmountError,
    InvalidDimError,
    InvalidImportanceScoresError,
    InvalidParametersError,
    InvalidTargetError,
    PruneplugError,
    StrategyNotFoundError,
    TensorNotFoundError,
    UnsupportedNormError,
)
from ..io.report import RuleOutcome, report
from ..storage.formats import MaskStorage
from ._calibrated import (
    check_gradient_batches,
    prune_rule_calibrated,
    settings_for,
    updates_values,
)
from ._calibration import Batches, CalibrationData, Loss, load_calibration
from ._errors import PlanError, tensor_error
from ._formats import load_plan
from ._model import Plan, parse_plan
from ._report import PlanReport
from ._resolve import ResolvedRule, Target, plan_inputs, resolve_with

__all__ = ["apply_plan", "PlanLike", "Progress"]

PlanLike = Plan | Mapping[str, object] | str | os.PathLike[str]
"""A :class:`Plan`, plan data (a mapping, as read from a file), or the path of a plan file."""

Progress = Callable[[int, int], object]
"""Called as ``progress(rules_done, rules_total)`` after each rule."""


def _as_plan(plan: object, source: str | None) -> Plan:
    if isinstance(plan, Plan):
        return plan
    if isinstance(plan, (str, os.PathLike)):
        return load_plan(plan)
    if isinstance(plan, Mapping):
        return parse_plan(dict(plan), source=source)
    raise PlanError(
        f"expected a Plan, plan data (a mapping) or a plan file's path, got {type(plan).__name__}", source=source
    )


# Which field of a rule a core error points at.
_FIELDS: tuple[tuple[type[PruneplugError], str], ...] = (
    (InvalidAmountError, "params.amount"),
    (InvalidDimError, "params.dim"),
    (UnsupportedNormError, "params.n"),
    (InvalidParametersError, "params"),
    (InvalidImportanceScoresError, "params"),
    (TensorNotFoundError, "tensors"),
    (IncompatibleStrategyError, "scope"),
    (StrategyNotFoundError, "strategy"),
)


def _field_of(error: PruneplugError) -> str:
    return next((field for kind, field in _FIELDS if isinstance(error, kind)), "strategy")


@dataclass
class _Counts:
    entries: int = 0
    alive: int = 0
    zeros: int = 0


def _counts(targets: tuple[Target, ...]) -> _Counts:
    counts = _Counts()
    with torch.no_grad():
        for target in targets:
            state = tensor_state(target.module, target.tensor)
            value = getattr(target.module, target.tensor)
            counts.entries += value.numel()
            counts.zeros += value.numel() - int(value.count_nonzero())
            counts.alive += int(default_alive(state).count_nonzero())
    return counts


# Which field of a channel rule a core error points at.
_CHANNEL_FIELDS: tuple[tuple[type[PruneplugError], str], ...] = (
    (InvalidAmountError, "params.amount"),
    (UnsupportedNormError, "params.n"),
    (InvalidParametersError, "params"),
    (InvalidImportanceScoresError, "params"),
    (ChannelTraceError, "example_input"),
    (InvalidTargetError, "modules"),
)


def _prune_channels(model: nn.Module, resolved: ResolvedRule, inputs: ExampleInputs | None) -> None:
    rule = resolved.rule
    if inputs is None or resolved.selection is None:  # pragma: no cover - resolve_plan refuses these
        raise PlanError("a channel rule needs example inputs", rule=resolved.index, field="example_input")
    try:
        prune_channels(
            model,
            rule.strategy,
            example_inputs=inputs,
            scope=rule.scope,
            group_filter=resolved.selection,
            round_to=rule.round_to,
            group_reduction=rule.group_reduction,
            **dict(rule.params),
        )
    except PruneplugError as error:
        field = next((f for kind, f in _CHANNEL_FIELDS if isinstance(error, kind)), "strategy")
        raise PlanError(str(error), rule=resolved.index, field=field) from error


def _apply_rule(
    model: nn.Module,
    resolved: ResolvedRule,
    mask_storage: MaskStorage | None,
    inputs: ExampleInputs | None,
    data: CalibrationData | None,
) -> tuple[RuleOutcome, CalibrationReport | None]:
    """Apply one rule: what it did, and the calibration report of a data-aware rule (``None`` for others)."""
    rule = resolved.rule
    if resolved.skipped is not None:
        skipped = RuleOutcome(
            index=resolved.index,
            strategy=rule.strategy,
            scope=rule.scope,
            description=rule.description,
            tensors=(),
            entries=0,
            newly_pruned=0,
            sparsity_before=0.0,
            sparsity_after=0.0,
            skipped=resolved.skipped,
        )
        return skipped, None
    targets = resolved.targets
    before = _counts(targets)
    params = dict(rule.params)
    calibration: CalibrationReport | None = None
    if rule.channels:
        _prune_channels(model, resolved, inputs)
    elif resolved.calibrated is not None:
        if data is None:  # pragma: no cover - _apply loads it for every data-aware rule
            raise PlanError("a data-aware rule needs calibration data", rule=resolved.index, field="calibration")
        layers = [t.module_name for t in targets]
        calibration = prune_rule_calibrated(model, rule, resolved.index, layers, data, mask_storage)
    elif rule.scope == "global":
        try:
            prune_global([(t.module, t.tensor) for t in targets], rule.strategy, mask_storage=mask_storage, **params)
        except PruneplugError as error:
            raise PlanError(str(error), rule=resolved.index, field=_field_of(error)) from error
    else:
        for target in targets:
            try:
                prune(target.module, target.tensor, rule.strategy, mask_storage=mask_storage, **params)
            except PruneplugError as error:
                raise tensor_error(error, target.name, rule=resolved.index, field=_field_of(error)) from error
    after = _counts(targets)
    entries = max(before.entries, 1)
    outcome = RuleOutcome(
        index=resolved.index,
        strategy=rule.strategy,
        scope=rule.scope,
        description=rule.description,
        tensors=tuple(t.name for t in targets),
        entries=before.entries,
        newly_pruned=before.alive - after.alive,
        sparsity_before=before.zeros / entries,
        sparsity_after=after.zeros / entries,
    )
    return outcome, calibration


def apply_plan(
    model: nn.Module,
    plan: PlanLike,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
    source: str | None = None,
    example_inputs: ExampleInputs | None = None,
    compact: bool | None = None,
    calibration: Batches | None = None,
    loss: Loss | None = None,
) -> PlanReport:
    """Apply every rule of ``plan`` to ``model``, in order, atomically; return the sparsity report.

    Args:
        model: the model to prune (pruned already or not: rules act on what is left).
        plan: a :class:`Plan`, plan data, or the path of a TOML/YAML/JSON plan file.
        dry_run: apply, report, then put the model back exactly as it was.
        progress: called as ``progress(done, total)`` after each rule.
        source: the plan's file, named in errors (the default when ``plan`` is a path).
        example_inputs: what the model is called with, for channel rules and
            compaction (a tensor, a tuple of positional arguments, a dict of
            keyword arguments); default: the tensor the plan's
            ``example_input`` describes.
        compact: after the rules, remove the pruned channels for real
            (:func:`pruneplug.compact`); default: as the plan's ``compact`` says.
        calibration: the data of data-aware rules (``wanda``, ``sparsegpt``):
            an iterable of batches or a callable ``run(model)``, as
            :func:`pruneplug.prune_calibrated` takes; default: what the
            function the plan's ``calibration.batches`` names returns.
        loss: ``loss(output, batch) -> scalar tensor``, for rules whose score
            reads gradients (``taylor``); default: the plan's ``calibration.loss``.

    Returns:
        :class:`PlanReport`: the :class:`~pruneplug.Report` of the whole
        model, with ``rules`` saying what each rule selected and the sparsity
        it gave, ``calibration`` the :class:`~pruneplug.CalibrationReport` of
        each data-aware rule by its index (per layer and per block; a dry run
        included), ``compaction`` the :class:`~pruneplug.CompactionReport`
        when the plan compacted the model (a dry run included), and
        ``schedules`` the schedule of each rule that has one, by its index:
        such a rule is pruned at once to its final sparsity, the schedule's end state.

    Raises:
        PlanError: the plan is invalid, does not fit the model, or a rule (or
            the compaction) failed; it names the file, the rule and the
            field, and the model is exactly as it was before the call.
    """
    if source is None and isinstance(plan, (str, os.PathLike)):
        source = str(plan)
    try:
        return _apply(
            model,
            _as_plan(plan, source),
            dry_run,
            progress,
            example_inputs,
            compact,
            calibration=calibration,
            loss=loss,
        )
    except PlanError as error:
        raise error.locate(source=source) from error.__cause__


class _ModelSnapshot:
    """Every module of a model as it is now, the values of its parameters included.

    Compaction gives parameters smaller values in place (``parameter.data``,
    keeping their identity), which a :class:`ModuleSnapshot` alone does not
    restore; the old values are kept here by reference, not copied.
    """

    def __init__(self, model: nn.Module) -> None:
        modules = list(model.modules())
        self.snapshots = [ModuleSnapshot(module) for module in modules]
        self.data = [
            (parameter, parameter.data)
            for module in modules
            for parameter in module._parameters.values()
            if parameter is not None
        ]

    def restore(self) -> None:
        for snapshot in self.snapshots:
            snapshot.restore()
        for parameter, data in self.data:
            parameter.data = data


def _end_state(plan: Plan) -> tuple[Plan, dict[int, str]]:
    """One shot: the plan with each scheduled rule's amount its final sparsity, and those rules' schedules."""
    ended = plan.end_state()
    schedules = {}
    for index, rule in enumerate(ended.rules):
        schedule = plan.schedule_for(index)
        if schedule is not None:
            final = rule.params.get("amount")
            schedules[index] = schedule.describe() + ("" if final is None else f": final sparsity {final:g}")
    return ended, schedules


def _compact(model: nn.Module, inputs: ExampleInputs | None) -> CompactionReport:
    if inputs is None:
        raise PlanError(
            "compacting runs the model to check the compacted one computes what the masked one did: give the plan "
            "an example_input, e.g. example_input = {shape = [1, 3, 224, 224]} (apply_plan's example_inputs=, or "
            "pruneplug apply --input-shape, also give one)",
            field="example_input",
        )
    try:
        return compact_model(model, inputs)
    except PruneplugError as error:
        raise PlanError(f"the compaction failed: {error.reason}", field="compact") from error


def _apply(
    model: nn.Module,
    plan: Plan,
    dry_run: bool,
    progress: Progress | None,
    example_inputs: ExampleInputs | None,
    compact: bool | None,
    *,
    calibration: Batches | None = None,
    loss: Loss | None = None,
) -> PlanReport:
    """Resolve every rule, load the calibration, snapshot what the rules select, apply in order; restore on
    failure or for a dry run."""
    if not isinstance(model, nn.Module):
        raise PlanError(f"a plan applies to a torch.nn.Module, got {type(model).__name__}")
    plan, schedules = _end_state(plan)
    compacting = plan.compact if compact is None else compact
    inputs, described = plan_inputs(model, plan, example_inputs)
    if compacting and inputs is None:
        _compact(model, None)  # raises: the example input is missing
    settings = settings_for(plan.calibration, batches=calibration is not None, loss=loss is not None)
    resolved = resolve_with(model, plan, inputs, described, settings)
    active = [item for item in resolved if item.calibrated is not None and item.skipped is None]
    data = load_calibration(plan.calibration, batches=calibration, loss=loss, passes=len(active)) if active else None
    if data is not None:
        check_gradient_batches([(item.index, item.rule) for item in active], data)
    restore_rng = torch.get_rng_state()
    snapshot: _ModelSnapshot | None = None
    snapshots: list[ModuleSnapshot] = []
    if compacting or any(item.rule.channels for item in resolved):
        snapshot = _ModelSnapshot(model)  # channel rules and compaction reach far beyond what a rule selects
    else:
        modules = {id(t.module): t.module for item in resolved for t in item.targets}
        snapshots = [ModuleSnapshot(module) for module in modules.values()]
    # The old values of weights a rule updates in place (sparsegpt), for a later rule, the compaction or a dry
    # run to put back (the rule's own failure is undone by prune_calibrated); a temporary file for a CPU model.
    with Rollback(()) as values:
        last = max((item.index for item in resolved if item.skipped is None), default=-1)
        for item in active:
            if (dry_run or compacting or item.index < last) and updates_values(item.rule, item.index):
                for target in item.targets:
                    values.keep_values(target.module)

        def restore() -> None:
            if snapshot is not None:
                snapshot.restore()
            for item in snapshots:
                item.restore()
            values.restore()  # after the snapshots: the parameters hold their old tensors again, refilled here
            torch.set_rng_state(restore_rng)

        outcomes: list[RuleOutcome] = []
        calibrations: dict[int, CalibrationReport] = {}
        compaction: CompactionReport | None = None
        try:
            for item in resolved:
                outcome, calibrated = _apply_rule(model, item, plan.mask_storage, inputs, data)
                outcomes.append(outcome)
                if calibrated is not None:
                    calibrations[item.index] = calibrated
                if progress is not None:
                    progress(len(outcomes), len(resolved))
            if compacting:
                compaction = _compact(model, inputs)
            result = report(model, rules=outcomes, dry_run=dry_run)
        except BaseException:
            restore()
            raise
        if dry_run:
            restore()
    return PlanReport(**dict(result), compaction=compaction, calibration=calibrations, schedules=schedules)
