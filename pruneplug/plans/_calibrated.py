"""Data-aware rules: which rules run on calibration data, what they select, and applying them.

A rule runs on calibration data when its strategy needs statistics of its
layers' inputs (it implements :class:`pruneplug.NeedsStatistics` with a
non-empty ``required_statistics()``: ``wanda``, ``sparsegpt``, a plugin's),
or when it scores by gradients (``scored_*`` with ``score = "taylor"``) and
the plan gives a ``calibration.loss``; without a loss, a taylor rule reads
the ``.grad`` the model already has, as before. Channel rules never do.

Such a rule is applied through :func:`pruneplug.prune_calibrated`, one call
per rule, in the plan's order: each calibrates on the model the rules before
it left. Its targets are the *linear layers* (``nn.Linear``, GPT-2's
``Conv1D``) among the modules it selects, each pruned in its ``weight`` --
what the statistics describe. A rule with no ``modules``, ``module_regex``
or ``types`` selects what ``prune_calibrated`` prunes by default (every
linear layer inside the blocks when sequential, every one but the output
head otherwise), less its ``exclude``. When calibrating block by block, each
selected layer must lie inside a block; a rule with ``scope = "global"``
ranks all its layers together, so it always calibrates in one pass. A rule
with ``allocation = "owl"`` gives each block its own amount
(:func:`pruneplug.owl_amounts`), so its layers lie inside the blocks however
it calibrates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..calibration import CalibrationReport, prune_calibrated
from ..calibration.blocks import Block, find_blocks
from ..calibration.gradients import reads_gradients
from ..calibration.targets import is_linear_layer, select_targets
from ..core.fast_path import updating_values
from ..errors import (
    CalibrationBatchError,
    CalibrationBlockError,
    CalibrationError,
    CalibrationLossError,
    IncompatibleStrategyError,
    InvalidAmountError,
    InvalidParametersError,
    InvalidTargetError,
    PruneplugError,
)
from ..storage.formats import MaskStorage
from ._calibration import CalibrationData, CalibrationSource
from ._errors import PlanError
from ._model import OWL_NOT_CALIBRATED, Plan, Rule, calibration_reason, strategy_for

__all__ = [
    "CalibrationSettings",
    "calibration_reasons",
    "check_calibration_given",
    "check_allocations",
    "settings_for",
    "blocks_for",
    "linear_targets",
    "is_sequential",
    "in_blocks",
    "NoLinearLayer",
    "updates_values",
    "check_gradient_batches",
    "prune_rule_calibrated",
]

_LISTED = 8


@dataclass(frozen=True)
class CalibrationSettings:
    """What resolving a plan needs to know of its calibration, before any of it is loaded.

    Attributes:
        given: whether calibration batches are given (the plan's section, or in Python).
        loss: whether a loss is given (gradient rules then run on calibration data).
        sequential: block by block, or one pass.
        blocks: the blocks as the plan names them (``None``: the default).
    """

    given: bool
    loss: bool
    sequential: bool = True
    blocks: str | tuple[str, ...] | None = None


def settings_for(source: CalibrationSource | None, *, batches: bool = False, loss: bool = False) -> CalibrationSettings:
    """The settings of the plan's ``source``, with batches or a loss given in Python."""
    if source is None:
        return CalibrationSettings(given=batches, loss=loss)
    return CalibrationSettings(
        given=True, loss=loss or source.loss is not None, sequential=source.sequential, blocks=source.blocks
    )


def _method(rule: Rule, index: int) -> object:
    """A fresh instance of the rule's strategy, with its parameters."""
    try:
        return strategy_for(rule.strategy).create(**dict(rule.params))
    except PruneplugError as error:
        raise PlanError(error.reason, rule=index, field="strategy") from error


def _reason(rule: Rule, index: int, loss: bool) -> str | None:
    """Why ``rule`` runs on calibration data, or ``None`` when it does not."""
    if rule.channels:
        return None
    return calibration_reason(_method(rule, index), loss=loss)


def calibration_reasons(plan: Plan, settings: CalibrationSettings) -> dict[int, str]:
    """The rules of ``plan`` that run on calibration data: index -> why."""
    reasons = {index: _reason(rule, index, settings.loss) for index, rule in enumerate(plan.rules)}
    return {index: why for index, why in reasons.items() if why is not None}


def check_calibration_given(plan: Plan, reasons: Mapping[int, str], settings: CalibrationSettings) -> None:
    """Raise :class:`PlanError` naming the first rule that needs calibration data when none is given."""
    if settings.given or not reasons:
        return
    index, why = next(iter(reasons.items()))
    raise PlanError(
        f"{plan.rules[index].strategy!r} runs on calibration data ({why}), and the plan names none: give it a "
        'calibration section, e.g. calibration = { batches = "mypkg.data:calibration_batches" }, a function '
        "returning the batches (or apply_plan(..., calibration=batches), or pruneplug apply --calibration "
        "MODULE:FUNCTION)",
        rule=index,
        field="strategy",
    )


def check_allocations(plan: Plan, reasons: Mapping[int, str]) -> None:
    """Raise :class:`PlanError` for a rule with ``allocation = "owl"`` that does not run on calibration data.

    Reading the plan refuses OWL on a strategy that never does; this finds
    the one that does only with a loss (``taylor``) when none is given.
    """
    for index, rule in enumerate(plan.rules):
        if rule.allocation == "owl" and index not in reasons:
            raise PlanError(
                f"{OWL_NOT_CALIBRATED}; this {rule.strategy!r} rule does not, as no loss is given (the plan's "
                "calibration.loss, or apply_plan(..., loss=)): give one, or leave allocation out",
                rule=index,
                field="allocation",
            )


def blocks_for(model: nn.Module, settings: CalibrationSettings, owl: int | None = None) -> list[Block]:
    """The blocks a sequential calibration goes through (raises :class:`PlanError` naming the field).

    ``owl``: the index of a rule with ``allocation = "owl"`` that needs them
    while the plan calibrates in one pass (an error then names it).
    """
    try:
        return find_blocks(model, settings.blocks)
    except PruneplugError as error:
        if settings.blocks is not None:
            raise PlanError(error.reason, field="calibration.blocks") from error
        if owl is not None:
            raise PlanError(
                f"allocation = 'owl' gives each block its own amount, so it needs the model's blocks: {error.reason}. "
                "In a plan: name them in calibration.blocks (a ModuleList's qualified name), or leave allocation out",
                rule=owl,
                field="allocation",
            ) from error
        raise PlanError(
            f"calibrating block by block needs the model's blocks: {error.reason}. In a plan: name them in "
            "calibration.blocks (a ModuleList's qualified name), or set calibration.sequential = false",
            field="calibration.sequential",
        ) from error


def is_sequential(rule: Rule, settings: CalibrationSettings) -> bool:
    """Whether ``rule`` calibrates block by block: a global rule ranks all its layers together, in one pass."""
    return settings.sequential and rule.scope == "local"


def in_blocks(rule: Rule, settings: CalibrationSettings) -> bool:
    """Whether ``rule`` prunes layers inside the blocks only: it calibrates block by block, or OWL gives each
    block its amount."""
    return is_sequential(rule, settings) or rule.allocation == "owl"


class NoLinearLayer(Exception):
    """The rule selects no layer a data-aware strategy can prune: the field at fault and why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def linear_targets(
    model: nn.Module,
    rule: Rule,
    index: int,
    chosen: Sequence[tuple[str, nn.Module]],
    settings: CalibrationSettings,
    blocks: list[Block] | None,
) -> list[tuple[str, nn.Module]]:
    """The layers a data-aware rule prunes among the modules it selects (``chosen``), in the model's order.

    Raises:
        PlanError: ``tensors`` other than ``weight``, or a layer outside the
            blocks when calibrating block by block.
        NoLinearLayer: the selection holds no linear layer (an optional rule is then skipped).
    """
    if rule.tensors != ("weight",):
        raise PlanError(
            "a data-aware rule prunes the weight of each linear layer it selects (what the statistics of its "
            "inputs describe); leave 'tensors' out",
            rule=index,
            field="tensors",
        )
    inside = in_blocks(rule, settings)
    if rule.modules is None and rule.module_regex is None and rule.types is None:
        try:
            default = select_targets(model, None, blocks if inside else None, sequential=inside)
        except PruneplugError as error:
            raise NoLinearLayer("modules", error.reason) from error
        kept = {id(module) for _, module in chosen}
        found = [(target.name, target.module) for target in default.targets if id(target.module) in kept]
        if not found:
            raise NoLinearLayer("exclude", "'exclude' leaves out every layer the rule would prune by default")
        return found
    found = [(name, module) for name, module in chosen if is_linear_layer(module)]
    if not found:
        kinds = ", ".join(f"{name!r} ({type(module).__name__})" for name, module in chosen[:_LISTED])
        raise NoLinearLayer(
            "types" if rule.types is not None else "modules",
            "data-aware strategies prune linear layers (nn.Linear, GPT-2's Conv1D), and the rule selects none: "
            f"{kinds}{' ...' if len(chosen) > _LISTED else ''}",
        )
    if inside and blocks is not None:
        within = {id(sub) for block in blocks for sub in block.module.modules()}
        outside = [name for name, module in found if id(module) not in within]
        if outside:
            why, way_out = (
                ("allocation = 'owl' gives each block its own amount, so it prunes", "or leave allocation out")
                if rule.allocation == "owl"
                else ("calibrating block by block prunes", "or set calibration.sequential = false")
            )
            raise PlanError(
                f"{outside[0]!r} lies outside the blocks ({_blocks_text(blocks)}); {why} layers inside them only: "
                f"leave it out (exclude), name blocks that hold it in calibration.blocks, {way_out}",
                rule=index,
                field="modules",
            )
    return found


def _blocks_text(blocks: list[Block]) -> str:
    names = [block.name for block in blocks]
    return ", ".join(names[:3]) + (f" ... ({len(names)} in all)" if len(names) > 3 else "")


# Which field of a data-aware rule a driver error points at, by its type (the first that matches).
_FIELDS: tuple[tuple[type[PruneplugError], str], ...] = (
    (CalibrationBatchError, "calibration.batches"),
    (CalibrationLossError, "calibration.loss"),
    (CalibrationBlockError, "calibration.blocks"),
    (InvalidAmountError, "params.amount"),
    (InvalidParametersError, "params"),
    (IncompatibleStrategyError, "scope"),
    (InvalidTargetError, "modules"),
)


def _field(error: PruneplugError) -> str:
    found = next((field for kind, field in _FIELDS if isinstance(error, kind)), None)
    if found is not None:
        return found
    if isinstance(error, CalibrationError):
        if error.tensor is not None:  # raised by the strategy on one layer (a Hessian that will not factor)
            return "params"
        return "calibration.batches"  # a block that fails on a batch's inputs, a layer the batches never reach
    return "strategy"


def prune_rule_calibrated(
    model: nn.Module,
    rule: Rule,
    index: int,
    layers: Sequence[str],
    data: CalibrationData,
    mask_storage: MaskStorage | None,
) -> CalibrationReport:
    """Apply one data-aware rule to ``layers`` (qualified names) through :func:`pruneplug.prune_calibrated`."""
    params: dict[str, Any] = dict(rule.params)
    amount = params.pop("amount", None)
    gradients = reads_gradients(_method(rule, index))
    sequential = data.sequential and rule.scope == "local"
    owl = rule.allocation == "owl"
    try:
        return prune_calibrated(
            model,
            rule.strategy,
            amount=amount,
            calibration=data.batches,
            targets=list(layers),
            sequential=sequential,
            blocks=data.blocks if sequential or owl else None,
            scope="global" if rule.scope == "global" else "layer",
            loss=data.loss if gradients else None,
            allocation=rule.allocation,
            owl_threshold=rule.owl_threshold if owl else None,
            owl_spread=rule.owl_spread if owl else None,
            progress=False,  # the plan's own progress reports rules; one live display at a time
            mask_storage=mask_storage,
            **params,
        )
    except PruneplugError as error:
        raise PlanError(str(error), rule=index, field=_field(error)) from error


def updates_values(rule: Rule, index: int) -> bool:
    """Whether the rule's strategy writes new values into the weights it keeps (:class:`pruneplug.UpdatesValues`)."""
    return updating_values(_method(rule, index))


def check_gradient_batches(rules: Sequence[tuple[int, Rule]], data: CalibrationData) -> None:
    """A rule taking gradients from the loss needs the batches themselves, not a ``run(model)`` hiding them."""
    if not callable(data.batches) or data.loss is None:
        return
    for index, rule in rules:
        if reads_gradients(_method(rule, index)):
            raise PlanError(
                "the calibration function returned a callable run(model), but this rule's taylor score needs each "
                "batch, for loss(output, batch): return the batches (an iterable) instead",
                rule=index,
                field="calibration.batches",
            )
