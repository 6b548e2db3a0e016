"""Resolving a plan against a model: which tensors each rule selects, and whether it can work.

Everything that can be known before pruning is checked here, for every rule,
before any tensor is touched:

* each glob in ``modules``/``exclude``, the ``module_regex`` and each name in
  ``types`` must match something in the model (a typo there would otherwise
  silently select nothing, or the wrong thing), with the closest names
  suggested;
* each tensor name must exist on a selected module, and the rule must select
  at least one tensor -- unless the rule is ``optional``, which is skipped;
* ``dim`` must index every selected tensor and an int ``amount`` must not
  exceed what is still unpruned (for a structured strategy, the alive slices
  along ``dim``; for a global rule, all selected entries together).

* a channel rule needs example inputs (the plan's ``example_input``): the
  model's channel graph is traced on them once, and the rule must prune at
  least one channel group (the groups of its modules' outputs that can be
  pruned; see :mod:`pruneplug.plans._channels`).

* a data-aware rule (:mod:`pruneplug.plans._calibrated`) needs the plan's
  ``calibration``; it selects the linear layers among its modules, which
  must lie inside the blocks when calibrating block by block or with
  ``allocation = "owl"`` (only such a rule may say it).

Later rules act on what earlier rules leave, which only applying can tell;
:mod:`pruneplug.plans._apply` rolls everything back if one of them fails.
"""

from __future__ import annotations

import fnmatch
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from torch import nn

from ..calibration.blocks import Block
from ..compaction import ChannelGraph, trace_channels
from ..compaction.trace import ExampleInputs
from ..core.state import default_alive, pruning_hooks, tensor_state
from ..errors import ChannelGraphWarning, PruneplugError, close_matches_hint
from ..selection.slices import alive_slices, normalize_dim
from ._calibrated import (
    CalibrationSettings,
    NoLinearLayer,
    blocks_for,
    calibration_reasons,
    check_allocations,
    check_calibration_given,
    in_blocks,
    is_sequential,
    linear_targets,
    settings_for,
)
from ._channels import ChannelSelection
from ._errors import PlanError, tensor_error
from ._inputs import example_tensor, model_device
from ._model import Plan, Rule, strategy_for

__all__ = ["Target", "ResolvedRule", "channel_graph", "resolve_plan", "resolve_rule", "tensor_names", "type_names"]

_LISTED = 12


@dataclass(frozen=True)
class Target:
    """One selected tensor: ``module.<tensor>``, where ``module`` is ``model.get_submodule(module_name)``."""

    module_name: str
    module: nn.Module = field(repr=False, compare=False)
    tensor: str

    @property
    def name(self) -> str:
        """The qualified name, as in a state_dict: ``"conv1.weight"``."""
        return f"{self.module_name}.{self.tensor}" if self.module_name else self.tensor


@dataclass(frozen=True)
class ResolvedRule:
    """A rule of a plan with what it selects in one model.

    Attributes:
        index: the rule's position in the plan.
        rule: the rule.
        targets: the selected tensors, in module order (empty if skipped); for a
            channel rule, every parameter of the channel groups it prunes.
        skipped: why an ``optional`` rule selects nothing; ``None`` otherwise.
        selection: for a channel rule, which channel groups it prunes
            (:func:`pruneplug.prune_channels`'s ``group_filter``).
        groups: for a channel rule, how many channel groups it prunes.
        calibrated: for a data-aware rule, why it runs on calibration data
            (``"it needs the statistic input_sq_norms of its layers' inputs"``);
            ``None`` for any other rule.
    """

    index: int
    rule: Rule
    targets: tuple[Target, ...]
    skipped: str | None = None
    selection: ChannelSelection | None = field(default=None, repr=False)
    groups: int = 0
    calibrated: str | None = None


def type_names(module: nn.Module) -> set[str]:
    """The names a ``types`` entry may use for ``module``: its classes' and their bases' names, bare or qualified."""
    names: set[str] = set()
    for cls in type(module).__mro__:
        if cls is object or not issubclass(cls, nn.Module):
            continue
        names.add(cls.__name__)
        names.add(f"{cls.__module__}.{cls.__qualname__}")
        if cls.__module__.startswith("torch.nn.modules."):
            names.add(f"torch.nn.{cls.__qualname__}")  # the public spelling: torch.nn.Linear
    return names


def tensor_names(module: nn.Module) -> list[str]:
    """The prunable tensors of ``module`` itself, pruned ones by their own name (``weight``, not ``weight_orig``)."""
    hooked = [str(getattr(hook, "_tensor_name", "")) for _, hook in pruning_hooks(module)]
    names: list[str] = []
    for name, parameter in module._parameters.items():
        if parameter is None:
            continue
        if name.endswith("_orig") and name[: -len("_orig")] in hooked:
            name = name[: -len("_orig")]
        if name not in names:
            names.append(name)
    names += [name for name in hooked if name and name not in names]
    return names


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) if n else "'' (the model itself)" for n in names[:_LISTED])
    return shown + (f" ... ({len(names)} in all)" if len(names) > _LISTED else "") if names else "none"


class _Miss(Exception):
    """A selector matched nothing: the field at fault and why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _modules(model: nn.Module, rule: Rule) -> tuple[list[tuple[str, nn.Module]], list[str]]:
    """The modules the rule selects, and those its ``exclude`` names; raises :class:`_Miss` when it
    selects none or a selector has a typo.

    An ``optional`` rule only fails (to be skipped) when it selects nothing
    at all: its globs and types may name modules that only some models have.
    """
    strict = not rule.optional
    modules = list(model.named_modules())
    names = [name for name, _ in modules]
    for key, patterns in (("modules", rule.modules or ()), ("exclude", rule.exclude)):
        for position, pattern in enumerate(patterns):
            if strict and not any(fnmatch.fnmatchcase(name, pattern) for name in names):
                raise _Miss(
                    f"{key}[{position}]",
                    f"{pattern!r} matches no module of the model.{close_matches_hint(pattern, names)} "
                    f"Modules: {_listing(names)}",
                )
    regex = re.compile(rule.module_regex) if rule.module_regex is not None else None
    if strict and regex is not None and not any(regex.fullmatch(name) for name in names):
        raise _Miss("module_regex", f"{rule.module_regex!r} matches no module name. Modules: {_listing(names)}")
    types = {name: type_names(module) for name, module in modules}
    if strict and rule.types is not None:
        known = sorted({type(module).__name__ for _, module in modules})
        for position, wanted in enumerate(rule.types):
            if not any(wanted in found for found in types.values()):
                raise _Miss(
                    f"types[{position}]",
                    f"no module of the model is a {wanted!r}.{close_matches_hint(wanted, known)} "
                    f"Module types: {', '.join(known)}",
                )
    chosen = [
        (name, module)
        for name, module in modules
        if (rule.modules is None or any(fnmatch.fnmatchcase(name, p) for p in rule.modules))
        and (regex is None or regex.fullmatch(name))
        and (rule.types is None or any(t in types[name] for t in rule.types))
        and not any(fnmatch.fnmatchcase(name, p) for p in rule.exclude)
    ]
    if not chosen:
        raise _Miss(
            "modules", "no module passes every filter of the rule together (modules, module_regex, types, exclude)"
        )
    excluded = [name for name in names if any(fnmatch.fnmatchcase(name, p) for p in rule.exclude)]
    return chosen, excluded


def _select(model: nn.Module, rule: Rule) -> list[Target]:
    """The rule's targets; raises :class:`_Miss` when it selects nothing or a selector has a typo."""
    strict = not rule.optional
    chosen, _ = _modules(model, rule)
    available = {name: tensor_names(module) for name, module in chosen}
    every = sorted({tensor for found in available.values() for tensor in found})
    for position, tensor in enumerate(rule.tensors):
        if strict and not any(tensor in found for found in available.values()):
            raise _Miss(
                f"tensors[{position}]",
                f"no selected module has a parameter {tensor!r}.{close_matches_hint(tensor, every)} "
                f"Parameters of the selected modules: {', '.join(every) or 'none'}",
            )
    targets = [
        Target(name, module, tensor)
        for name, module in chosen
        for tensor in dict.fromkeys(rule.tensors)
        if tensor in available[name]
    ]
    if not targets:
        raise _Miss("tensors", f"the selected modules have none of the tensors {', '.join(map(repr, rule.tensors))}")
    return targets


def _validated(rule: Rule, index: int) -> BaseModel:
    try:
        return strategy_for(rule.strategy).validate(dict(rule.params))
    except PruneplugError as error:  # the registry changed since the plan was validated
        raise PlanError(error.reason, rule=index, field="strategy") from error


def _check_fit(rule: Rule, index: int, targets: Sequence[Target], owners: dict[int, str]) -> None:
    """``dim`` indexes every tensor, an int ``amount`` is no more than what is left to prune, and no
    parameter is reached under two names (``owners``: parameter id -> the name it was first selected by,
    shared by all the rules of a plan)."""
    spec = strategy_for(rule.strategy)
    params = _validated(rule, index)
    amount: Any = getattr(params, "amount", None)
    dim: Any = getattr(params, "dim", None)
    counts = isinstance(amount, int) and not isinstance(amount, bool)
    total = 0
    for target in targets:
        try:
            state = tensor_state(target.module, target.tensor)
            alive = default_alive(state)
        except PruneplugError as error:
            raise tensor_error(error, target.name, rule=index, field="tensors") from error
        first = owners.setdefault(id(state.orig), target.name)
        if first != target.name:
            raise PlanError(
                f"{first} and {target.name} are one tied parameter; select it once (add one of them to "
                "'exclude'): selected twice, it would be counted twice, or its uses masked differently (untied)",
                rule=index,
                field="modules",
            )
        if spec.kind == "structured" and isinstance(dim, int):
            try:
                axis = normalize_dim(dim, alive.dim())
            except PruneplugError as error:
                raise PlanError(f"{target.name}: {error.reason}", rule=index, field="params.dim") from error
            if counts and rule.scope == "local":
                slices = int(alive_slices(alive, axis).count_nonzero())
                if amount > slices:
                    raise PlanError(
                        f"amount={amount} is more than the {slices} unpruned slices of {target.name} along dim {axis}",
                        rule=index,
                        field="params.amount",
                    )
        elif spec.kind == "unstructured" and counts:
            left = int(alive.count_nonzero())
            total += left
            if rule.scope == "local" and amount > left:
                raise PlanError(
                    f"amount={amount} is more than the {left} unpruned entries of {target.name}",
                    rule=index,
                    field="params.amount",
                )
    if counts and rule.scope == "global" and amount > total:
        raise PlanError(
            f"amount={amount} is more than the {total} unpruned entries of the {len(targets)} selected tensors",
            rule=index,
            field="params.amount",
        )


def _channel_select(model: nn.Module, rule: Rule, graph: ChannelGraph) -> tuple[list[Target], ChannelSelection, int]:
    """The parameters of the channel groups a channel rule prunes, its selection, and how many groups
    (raises :class:`_Miss` when it prunes none)."""
    chosen, excluded = _modules(model, rule)
    selection = ChannelSelection.of(((name, module, tensor_names(module)) for name, module in chosen), excluded)
    groups = [group for group in graph.prunable if selection(group)]
    if not groups:
        why = "; ".join(selection.why_not(graph.groups)[:_LISTED]) or "none of their parameters is in a channel group"
        raise _Miss("modules", f"the selected modules have no output channels that can be pruned: {why}")
    tensors = dict.fromkeys((m.module, m.tensor) for group in groups for m in group.members if m.parameter)
    targets = [Target(path, model.get_submodule(path), tensor) for path, tensor in tensors]
    return targets, selection, len(groups)


def resolve_rule(
    model: nn.Module,
    rule: Rule,
    index: int,
    owners: dict[int, str] | None = None,
    *,
    graph: ChannelGraph | None = None,
    calibrated: str | None = None,
    settings: CalibrationSettings | None = None,
    blocks: list[Block] | None = None,
) -> ResolvedRule:
    """What ``rule`` selects in ``model`` now, checked (raises :class:`PlanError`).

    ``owners`` carries the parameters earlier rules selected, so that a tied
    parameter selected under another name by a later rule is caught too.
    ``graph`` is the model's channel graph, which a channel rule needs.
    ``calibrated`` says why a data-aware rule runs on calibration data (it
    then selects linear layers, inside ``blocks`` when ``settings`` say to
    calibrate block by block).
    """
    try:
        if rule.channels:
            if graph is None:
                raise PlanError("a channel rule needs the model's channel graph", rule=index, field="channels")
            targets, selection, count = _channel_select(model, rule, graph)
            return ResolvedRule(index, rule, tuple(targets), selection=selection, groups=count)
        if calibrated is not None:
            chosen, _ = _modules(model, rule)
            try:
                layers = linear_targets(model, rule, index, chosen, settings or settings_for(None), blocks)
            except NoLinearLayer as miss:
                raise _Miss(miss.field, miss.message) from None
            targets = [Target(name, module, "weight") for name, module in layers]
        else:
            targets = _select(model, rule)
    except _Miss as miss:
        if rule.optional:
            return ResolvedRule(index, rule, (), skipped=f"{miss.field}: {miss.message}", calibrated=calibrated)
        raise PlanError(miss.message, rule=index, field=miss.field) from None
    _check_fit(rule, index, targets, {} if owners is None else owners)
    return ResolvedRule(index, rule, tuple(targets), calibrated=calibrated)


def channel_graph(model: nn.Module, example_inputs: ExampleInputs, described: str) -> ChannelGraph:
    """The channel graph of ``model`` on ``example_inputs`` (``described`` in errors), without its warnings.

    The graph's warnings (an operation it does not know) are given when the
    rule is applied, by :func:`pruneplug.prune_channels`'s own trace.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ChannelGraphWarning)
            return trace_channels(model, example_inputs)
    except PruneplugError as error:  # ChannelTraceError: the model does not run on the inputs
        raise PlanError(f"cannot trace the model on {described}: {error.reason}", field="example_input") from error


def plan_inputs(model: nn.Module, plan: Plan, given: ExampleInputs | None) -> tuple[ExampleInputs | None, str]:
    """The example inputs -- ``given``, or the tensor the plan's ``example_input`` describes, on the model's
    device -- and how errors name them; ``(None, "")`` when there are none."""
    if given is not None:
        return given, "the example inputs given"
    if plan.example_input is None:
        return None, ""
    return example_tensor(plan.example_input, model_device(model)), f"example_input {plan.example_input.describe()}"


def resolve_with(
    model: nn.Module,
    plan: Plan,
    example_inputs: ExampleInputs | None,
    described: str,
    settings: CalibrationSettings | None = None,
) -> list[ResolvedRule]:
    """:func:`resolve_plan` with the example inputs made already (``described``: how errors name them).

    ``settings`` says what calibration is given (default: the plan's own section).
    """
    settings = settings_for(plan.calibration) if settings is None else settings
    reasons = calibration_reasons(plan, settings)
    check_calibration_given(plan, reasons, settings)
    check_allocations(plan, reasons)
    blocks: list[Block] | None = None
    if any(in_blocks(plan.rules[i], settings) for i in reasons):
        sequential = any(is_sequential(plan.rules[i], settings) for i in reasons)
        owl = next((i for i in reasons if plan.rules[i].allocation == "owl"), None)
        blocks = blocks_for(model, settings, owl=None if sequential else owl)
    owners: dict[int, str] = {}
    graph: ChannelGraph | None = None
    channel_rules = [index for index, rule in enumerate(plan.rules) if rule.channels]
    if channel_rules:
        if example_inputs is None:
            raise PlanError(
                f"rules[{channel_rules[0]}] prunes channels, which runs the model once to find how its channels "
                "are coupled: give the plan an example_input, e.g. example_input = {shape = [1, 3, 224, 224]} "
                "(apply_plan's example_inputs=, or pruneplug apply --input-shape, also give one)",
                field="example_input",
            )
        graph = channel_graph(model, example_inputs, described)
    return [
        resolve_rule(
            model, rule, index, owners, graph=graph, calibrated=reasons.get(index), settings=settings, blocks=blocks
        )
        for index, rule in enumerate(plan.rules)
    ]


def resolve_plan(model: nn.Module, plan: Plan, *, example_inputs: ExampleInputs | None = None) -> list[ResolvedRule]:
    """Resolve and check every rule of ``plan`` against ``model``, changing nothing.

    ``example_inputs`` (default: the tensor the plan's ``example_input``
    describes) is what channel rules trace the model on. A data-aware rule
    needs the plan's ``calibration`` section (its ``calibrated`` says why it
    runs on calibration data); the section's functions are not imported here.
    """
    return resolve_with(model, plan, *plan_inputs(model, plan, example_inputs))
