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
3. A dry run does all of that and then restores the model regardless.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ..api import prune, prune_global
from ..core.commit import ModuleSnapshot
from ..core.state import default_alive, tensor_state
from ..errors import (
    IncompatibleStrategyError,
    InvalidAmountError,
    InvalidDimError,
    InvalidImportanceScoresError,
    InvalidParametersError,
    PruneplugError,
    StrategyNotFoundError,
    TensorNotFoundError,
    UnsupportedNormError,
)
from ..io.report import Report, RuleOutcome, report
from ..storage.formats import MaskStorage
from ._errors import PlanError, tensor_error
from ._formats import load_plan
from ._model import Plan, parse_plan
from ._resolve import ResolvedRule, Target, resolve_plan

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


def _apply_rule(resolved: ResolvedRule, mask_storage: MaskStorage | None) -> RuleOutcome:
    rule = resolved.rule
    if resolved.skipped is not None:
        return RuleOutcome(
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
    targets = resolved.targets
    before = _counts(targets)
    params = dict(rule.params)
    if rule.scope == "global":
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
    return RuleOutcome(
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


def apply_plan(
    model: nn.Module,
    plan: PlanLike,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
    source: str | None = None,
) -> Report:
    """Apply every rule of ``plan`` to ``model``, in order, atomically; return the sparsity report.

    Args:
        model: the model to prune (pruned already or not: rules act on what is left).
        plan: a :class:`Plan`, plan data, or the path of a TOML/YAML/JSON plan file.
        dry_run: apply, report, then put the model back exactly as it was.
        progress: called as ``progress(done, total)`` after each rule.
        source: the plan's file, named in errors (the default when ``plan`` is a path).

    Returns:
        :class:`~pruneplug.Report` of the whole model, with
        ``rules`` saying what each rule selected and the sparsity it gave.

    Raises:
        PlanError: the plan is invalid, does not fit the model, or a rule
            failed; it names the file, the rule and the field, and the model
            is exactly as it was before the call.
    """
    if source is None and isinstance(plan, (str, os.PathLike)):
        source = str(plan)
    try:
        return _apply(model, _as_plan(plan, source), dry_run, progress)
    except PlanError as error:
        raise error.locate(source=source) from error.__cause__


def _apply(model: nn.Module, plan: Plan, dry_run: bool, progress: Progress | None) -> Report:
    """Resolve every rule, snapshot what they select, apply in order; restore on failure or for a dry run."""
    if not isinstance(model, nn.Module):
        raise PlanError(f"a plan applies to a torch.nn.Module, got {type(model).__name__}")
    resolved = resolve_plan(model, plan)
    modules = {id(t.module): t.module for item in resolved for t in item.targets}
    snapshots = [ModuleSnapshot(module) for module in modules.values()]
    rng = torch.get_rng_state()

    def restore() -> None:
        for snapshot in snapshots:
            snapshot.restore()
        torch.set_rng_state(rng)

    outcomes: list[RuleOutcome] = []
    try:
        for item in resolved:
            outcomes.append(_apply_rule(item, plan.mask_storage))
            if progress is not None:
                progress(len(outcomes), len(resolved))
        result = report(model, rules=outcomes, dry_run=dry_run)
    except BaseException:
        restore()
        raise
    if dry_run:
        restore()
    return result
