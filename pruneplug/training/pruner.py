"""The pruner that follows a schedule while a model trains: :class:`Pruner`.

Each rule (a plan rule: a selection, a strategy, a scope) is driven by a
:class:`~pruneplug.Schedule`. At a pruning step the rule's tensors are pruned
until the fraction pruned *in all* is the schedule's target: the target is
turned into an exact count of entries (slices, for a structured strategy),
``round(target * total)`` (Python's ``round``: the nearest integer, a half to
the even one), and the difference from what is pruned already is handed to
:func:`pruneplug.prune` (per tensor, ``local``) or
:func:`pruneplug.prune_global` (over the rule's tensors, ``global``) as an
int amount, which counts among the entries still unpruned. Masks only ever
lose ones. A pruning step is all or nothing: every module its rules select is
snapshotted first (the core's own snapshot) and restored, with the random
generators, if any rule fails.

Two ways to keep the pruned entries at zero (``masking``):

- ``"reparametrize"``: the core's ``weight = weight_orig * weight_mask``; the
  model is a pruned model at every step (reports, ``pack_masks``, compaction,
  checkpoints see its masks), and every forward multiplies the masks in,
  which autograd runs backwards too.
- ``"in_place"``: the pruner holds each mask, in its tensor's dtype, and
  multiplies the weights by it after every optimizer step (:meth:`Pruner.step`);
  the model keeps plain parameters, and a training step costs one
  multiplication per pruned tensor more than a dense one. At a pruning step
  the masks are installed (``custom_from_mask``), pruned further by the rules
  and folded back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from ..api import make_schedule, prune, prune_global, remove
from ..api.schedules import ScheduleLike
from ..core.commit import ModuleSnapshot
from ..core.state import count_nonzero, default_alive, pruning_hooks, tensor_state
from ..errors import (
    InvalidAmountError,
    InvalidDimError,
    InvalidParametersError,
    InvalidScheduleError,
    PruneplugError,
    TensorNotFoundError,
)
from ..plans import (
    Plan,
    PlanError,
    ResolvedRule,
    Rule,
    Target,
    final_sparsity,
    load_plan,
    parse_plan,
    resolve_plan,
)
from ..registry import get_registry
from ..schedules.base import Schedule
from ..selection.slices import alive_slices, normalize_dim
from ..statistics.spec import NeedsStatistics
from ..storage.formats import MaskStorage, check_storage

__all__ = ["Masking", "Pruner", "RulesLike", "STATE_VERSION", "check_rules"]

RulesLike = Plan | str | os.PathLike[str] | Sequence[Rule | Mapping[str, Any]]
"""What :class:`Pruner` takes as rules: a plan, a plan file's path, or a list of rules (mappings or :class:`Rule`)."""

STATE_VERSION = 2
"""The version of :meth:`Pruner.state_dict`'s layout (2: ``masking`` and the held ``masks``)."""

Masking = Literal["reparametrize", "in_place"]
"""How a :class:`Pruner` keeps the pruned entries at zero (see the module's docs)."""

# Which field of a rule a core error points at.
_FIELDS: tuple[tuple[type[PruneplugError], str], ...] = (
    (InvalidAmountError, "params.amount"),
    (InvalidDimError, "params.dim"),
    (InvalidParametersError, "params"),
    (TensorNotFoundError, "tensors"),
)


def _field_of(error: PruneplugError) -> str:
    return next((field for kind, field in _FIELDS if isinstance(error, kind)), "strategy")


@dataclass(frozen=True)
class _Driven:
    """One rule as the pruner drives it: its targets, schedule and final sparsity, and how it counts."""

    index: int
    rule: Rule
    targets: tuple[Target, ...]
    schedule: Schedule
    final: float
    dim: int | None  # the dim whose slices a structured strategy prunes; None: entries
    params: dict[str, Any]  # the strategy's parameters but the amount

    def units(self, alive: Tensor) -> tuple[int, int]:
        """``(total, pruned)`` entries of a target whose unpruned entries are ``alive`` (slices along :attr:`dim`)."""
        if self.dim is None:
            return alive.numel(), alive.numel() - count_nonzero(alive)
        kept = alive_slices(alive, normalize_dim(self.dim, alive.dim()))
        return kept.numel(), kept.numel() - count_nonzero(kept)


@dataclass
class _Held:
    """A mask the pruner holds for ``masking="in_place"``: 1 keeps an entry, 0 prunes it, in the tensor's dtype."""

    name: str  # qualified, "fc1.weight"
    module: nn.Module
    tensor: str
    mask: Tensor

    def parameter(self) -> Tensor:
        """The module's parameter the mask applies to (looked up on every use: it may have been replaced).

        The mask follows the parameter to its device and dtype (``model.to(...)`` after the pruner was made).
        """
        value = self.module._parameters.get(self.tensor)
        if value is None:
            raise PlanError(
                f"{self.name} is no parameter any more: the in-place pruner holds a mask for it (was it pruned or "
                "removed outside the pruner?)",
                field="masking",
            )
        if self.mask.device != value.device or self.mask.dtype != value.dtype:
            self.mask = self.mask.to(device=value.device, dtype=value.dtype)
        return value


def _split_rules(rules: RulesLike, default: Schedule | None = None) -> Plan:
    """The rules as a validated :class:`Plan`, holding each rule's own schedule and the plan's.

    A list of rules is a plan whose schedule is the pruner's ``default`` when
    that has a ``final``, so that a rule may leave its amount to it.
    """
    if isinstance(rules, Plan):
        return rules
    if isinstance(rules, (str, os.PathLike)):
        return load_plan(rules)
    if isinstance(rules, Mapping) or not isinstance(rules, Sequence) or not rules:
        raise PlanError(
            "rules must be a pruneplug.plans.Plan, a plan file's path, or a non-empty list of rules "
            f"(mappings with the fields of a plan rule), got {type(rules).__name__}"
        )
    data: list[object] = []
    for index, rule in enumerate(rules):
        if not isinstance(rule, (Rule, Mapping)):
            raise PlanError(f"a rule is a mapping of a plan rule's fields, got {type(rule).__name__}", rule=index)
        data.append(rule if isinstance(rule, Rule) else dict(rule))
    if default is None or default.final is None:  # (only a final the rules may leave their amount to)
        return parse_plan({"rules": data})
    return parse_plan({"rules": data, "schedule": default})


def _schedule_for(plan: Plan, default: Schedule | None, index: int) -> Schedule:
    """Rule ``index``'s schedule: its own, else the plan's, else the pruner's ``default``."""
    schedule = plan.schedule_for(index)
    if schedule is not None:
        return schedule
    if default is None:
        raise PlanError(
            "no schedule: give the rule its own ('schedule' in the rule), the plan one (its 'schedule') or the "
            "Pruner one (schedule=...)",
            rule=index,
            field="schedule",
        )
    return default


def _check_drivable(rule: Rule, index: int) -> None:
    """Raise :class:`PlanError` (naming the rule and the field) when a schedule cannot drive ``rule``."""
    problem: tuple[str, str] | None = None
    spec = get_registry().get(rule.strategy)
    if rule.channels:
        problem = (
            "channels",
            "channel rules (channels = true) are not driven by a schedule yet; use pruneplug.apply_plan",
        )
    elif spec.kind not in ("unstructured", "structured"):
        problem = (
            "strategy",
            (
                f"{spec.name!r} is of kind {spec.kind!r}: a schedule drives strategies that prune an amount, "
                "of kind 'unstructured' or 'structured'"
            ),
        )
    elif "amount" not in spec.params_model.model_fields:
        problem = "strategy", f"{spec.name!r} takes no amount, which a schedule needs to set"
    elif any(rule.params.get(name) is not None for name in ("keep_n", "of_m")):
        problem = "params", "N:M sparsity (keep_n, of_m) is a pattern, not a fraction a schedule can ramp: leave it out"
    else:
        try:
            method = spec.create(**dict(rule.params))
        except PruneplugError as error:
            raise PlanError(error.reason, rule=index, field=_field_of(error)) from error
        if isinstance(method, NeedsStatistics) and tuple(method.required_statistics()):
            problem = (
                "strategy",
                (
                    f"{spec.name!r} reads statistics of calibration data; the pruner drives strategies that rank the "
                    "weights as they are (use pruneplug.prune_calibrated for data-aware pruning)"
                ),
            )
    if problem is not None:
        raise PlanError(problem[1], rule=index, field=problem[0])


def _drive(resolved: ResolvedRule, schedule: Schedule) -> _Driven:
    """The rule ``resolved`` as the pruner drives it (raises :class:`PlanError` when it cannot)."""
    rule, index = resolved.rule, resolved.index
    spec = get_registry().get(rule.strategy)
    params = dict(rule.params)
    try:
        validated = spec.validate(params)
    except PruneplugError as error:  # pragma: no cover - the plan's rules are validated already
        raise PlanError(error.reason, rule=index, field=_field_of(error)) from error
    amount = params.pop("amount", None)
    try:
        final = final_sparsity(schedule, amount)
    except PlanError as error:
        raise PlanError(error.reason, rule=index, field=error.field) from error
    dim = getattr(validated, "dim", None) if spec.kind == "structured" else None
    return _Driven(index, rule, resolved.targets, schedule, final, dim, params)


def _prepare(
    rules: RulesLike, schedule: ScheduleLike | None, mask_storage: MaskStorage | None, masking: object
) -> tuple[Plan, list[Schedule], MaskStorage | None]:
    """The validated plan, each rule's schedule and the mask storage: all the checks that need no model."""
    if masking not in get_args(Masking):
        raise PlanError(
            f"masking must be one of {', '.join(map(repr, get_args(Masking)))}, got {masking!r}", field="masking"
        )
    try:
        default = None if schedule is None else make_schedule(schedule)
    except PruneplugError as error:
        raise PlanError(str(error), field="schedule") from error
    plan = _split_rules(rules, default)
    if plan.compact:
        raise PlanError("the Pruner does not compact while training; compact after it", field="compact")
    try:
        storage = check_storage(mask_storage)
    except PruneplugError as error:
        raise PlanError(str(error), field="mask_storage") from error
    schedules = [_schedule_for(plan, default, index) for index in range(len(plan.rules))]
    plan = plan.end_state()  # an amount left to the schedule's final filled in
    for index, rule in enumerate(plan.rules):  # refused before data-aware rules ask for calibration data
        _check_drivable(rule, index)
    return plan, schedules, storage


def check_rules(
    rules: RulesLike,
    *,
    schedule: ScheduleLike | None = None,
    mask_storage: MaskStorage | None = None,
    masking: Masking = "reparametrize",
) -> None:
    """Raise the :class:`PlanError` that ``Pruner(model, rules, ...)`` would raise for its arguments, with no model.

    What needs the model (a rule that selects nothing in it) is left to the
    :class:`Pruner`. The training integrations call it when they are made,
    so that a bad rule fails before training starts, not at its first step.

    >>> rules = [{"types": ["Linear"], "strategy": "wanda", "params": {"amount": 0.5}}]
    >>> check_rules(rules, schedule="one_shot")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pruneplug.plans._errors.PlanError: rules[0].strategy: 'wanda' reads statistics of calibration data; ...
    """
    _prepare(rules, schedule, mask_storage, masking)


class Pruner:
    """Prunes a model while it trains, following a schedule: call :meth:`step` after each ``optimizer.step()``.

    >>> import torch, pruneplug
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> pruner = pruneplug.Pruner(
    ...     model,
    ...     [{"types": ["Linear"], "strategy": "l1_unstructured", "params": {"amount": 0.5}}],
    ...     schedule={"name": "linear", "end": 4, "every": 2},
    ... )
    >>> for _ in range(5):
    ...     pruner.step()  # after optimizer.step()
    >>> pruner.current_step, pruner.sparsity()
    (5, [0.5])

    Args:
        model: the model to prune; pruned already or not (the schedule's
            targets count what is pruned already).
        rules: a :class:`pruneplug.plans.Plan`, a plan file's path, or a
            list of rules: mappings with a plan rule's fields (``modules``,
            ``types``, ``module_regex``, ``exclude``, ``tensors``,
            ``strategy``, ``params``, ``scope``), each may carry its own
            ``schedule`` too. A rule's ``params.amount`` is its final
            sparsity unless its schedule gives ``final``.
        schedule: the schedule of every rule that has none in the plan: a
            :class:`~pruneplug.Schedule` or what :func:`pruneplug.make_schedule`
            takes. A rule's schedule is its own, else the plan's ``schedule``,
            else this one: the plan says more about its rules than a default does.
        optimizer: its per-parameter state (momentum, Adam's moments: the
            state tensors of the parameter's shape) is zeroed at the entries
            each pruning step prunes, so that it does not carry them on.
        mask_storage: ``"bool"`` or ``"packed"`` (see :func:`pruneplug.prune`);
            default: the plan's ``mask_storage``, else as the masks are stored now.
            With ``masking="in_place"``, how :meth:`reparametrize` stores them.
        masking: ``"reparametrize"`` (the default: ``weight = weight_orig *
            weight_mask`` through a forward pre-hook, the model a pruned
            model at every step) or ``"in_place"`` (the pruner holds the
            masks and multiplies the weights by them in :meth:`step`: a
            training step as fast as a dense one, plain parameters in the
            model; tensors of the rules' modules pruned already are taken
            over, made plain with their masks held). See docs/training.md.

    Raises:
        PlanError: a rule is invalid, selects nothing in ``model``, has no
            schedule, or cannot be driven by one (channel rules, data-aware
            strategies, strategies without an amount, N:M); it names the rule
            and the field.
    """

    def __init__(
        self,
        model: nn.Module,
        rules: RulesLike,
        *,
        schedule: ScheduleLike | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        mask_storage: MaskStorage | None = None,
        masking: Masking = "reparametrize",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise PlanError(f"the Pruner prunes a torch.nn.Module, got {type(model).__name__}")
        plan, schedules, storage = _prepare(rules, schedule, mask_storage, masking)
        resolved = resolve_plan(model, plan)
        self.model = model
        self.optimizer = optimizer
        self.mask_storage: MaskStorage | None = storage if storage is not None else plan.mask_storage
        self._rules = [_drive(item, schedules[item.index]) for item in resolved if item.skipped is None]
        self._step = 0
        self.masking: Masking = masking
        self._names = {id(module): name for name, module in model.named_modules()}
        self._held: dict[str, _Held] = {}
        if masking == "in_place":
            self._take_over(self._modules(self._rules))

    # --- where it stands ----------------------------------------------------------------------

    @property
    def current_step(self) -> int:
        """The next step :meth:`step` handles: the number of steps handled so far (from 0)."""
        return self._step

    @property
    def schedules(self) -> list[Schedule]:
        """Each rule's schedule, in the rules' order (rules an ``optional`` selector skipped left out)."""
        return [driven.schedule for driven in self._rules]

    def targets(self) -> list[tuple[str, ...]]:
        """Each rule's tensors, by qualified name (``"fc1.weight"``), in the rules' order."""
        return [tuple(target.name for target in driven.targets) for driven in self._rules]

    def target_sparsity(self, step: int | None = None) -> list[float]:
        """Each rule's target at ``step`` (default: the last step handled), as its schedule gives it."""
        at = max(self._step - 1, 0) if step is None else step
        return [driven.schedule.at(at, driven.final) for driven in self._rules]

    def sparsity(self) -> list[float]:
        """Each rule's reached sparsity: the fraction of its entries (slices, if structured) pruned now."""
        reached = []
        for driven in self._rules:
            total = pruned = 0
            for target in driven.targets:
                units, gone = driven.units(self._alive_of(target.module, target.tensor))
                total, pruned = total + units, pruned + gone
            reached.append(pruned / total if total else 0.0)
        return reached

    # --- pruning ------------------------------------------------------------------------------

    def step(self, step: int | None = None) -> None:
        """Handle a training step (default: :attr:`current_step`), then count it: call after ``optimizer.step()``.

        At a pruning step of a rule's schedule, prune the rule's tensors up to
        the schedule's target (an exact count, see the module's docs); other
        steps only count. ``step`` sets the step handled (after it,
        :attr:`current_step` is ``step + 1``).

        With ``masking="in_place"``, every call also multiplies each weight
        by its mask (one ``torch._foreach_mul_`` per device and dtype), which
        sets back to zero what the optimizer step moved.

        Raises:
            PlanError: a rule failed (named with the field at fault); every
                rule of this step is undone, the optimizer's state untouched,
                and the step not counted (in place, the masks held before
                the step are applied).
            InvalidScheduleError: ``step`` is not an int >= 0.
        """
        if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
            raise InvalidScheduleError(f"step must be an int >= 0 (the optimizer steps taken before it), got {step!r}")
        at = self._step if step is None else step
        due = [driven for driven in self._rules if driven.schedule.prunes_at(at)]
        try:
            if due:
                self._prune(due, at)
        finally:
            if self.masking == "in_place":
                self.apply_masks()
        self._step = at + 1

    def _prune(self, due: list[_Driven], step: int) -> None:
        modules = self._modules(due)
        snapshots = [ModuleSnapshot(module) for module in modules]
        rng = torch.get_rng_state()
        generators = self._generators(due)
        in_place = self.masking == "in_place"
        before = self._alive(due) if self.optimizer is not None and not in_place else {}
        try:
            if in_place:
                self._install(modules)
            for driven in due:
                self._prune_rule(driven, driven.schedule.at(step, driven.final))
            held = self._fold(modules) if in_place else {}
        except BaseException:
            for snapshot in snapshots:
                snapshot.restore()
            torch.set_rng_state(rng)
            for generator, state in generators:
                generator.set_state(state)
            raise
        self._held.update(held)
        if before:
            self._zero_state(before)

    # --- masking in place ---------------------------------------------------------------------

    @staticmethod
    def _modules(rules: list[_Driven]) -> list[nn.Module]:
        """The modules of ``rules``' targets, each once, in their order."""
        return list({id(t.module): t.module for driven in rules for t in driven.targets}.values())

    def _alive_of(self, module: nn.Module, tensor: str) -> Tensor:
        """Bool mask of the unpruned entries of ``module.<tensor>``: the model's while it is pruned, else held ones.

        (In place, the held masks are installed on the model during a pruning step, so a rule sees what the
        rules before it pruned.)
        """
        state = tensor_state(module, tensor)
        held = self._held.get(self._qualified(module, tensor)) if self.masking == "in_place" else None
        if held is not None and not state.pruned:
            return held.mask != 0
        return default_alive(state)

    def _qualified(self, module: nn.Module, tensor: str) -> str:
        prefix = self._names.get(id(module), "")
        return f"{prefix}.{tensor}" if prefix else tensor

    def _fold(self, modules: list[nn.Module]) -> dict[str, _Held]:
        """Hold the masks of every pruned tensor of ``modules`` and make them plain parameters (the masks applied)."""
        held: dict[str, _Held] = {}
        for module in modules:
            for _, hook in pruning_hooks(module):
                name = hook._tensor_name
                state = tensor_state(module, name)
                qualified = self._qualified(module, name)
                held[qualified] = _Held(qualified, module, name, default_alive(state).to(state.orig.dtype))
        for item in held.values():
            remove(item.module, item.tensor)
        return held

    def _take_over(self, modules: list[nn.Module]) -> None:
        """``masking="in_place"`` on a model pruned already: hold its masks, make its tensors plain."""
        snapshots = [ModuleSnapshot(module) for module in modules]
        try:
            self._held.update(self._fold(modules))
        except BaseException:  # pragma: no cover - folding the core's own prunes does not fail
            for snapshot in snapshots:
                snapshot.restore()
            raise

    def _install(self, modules: list[nn.Module]) -> None:
        """Put the held masks of ``modules`` back as prunes (``custom_from_mask``), for the rules to prune further."""
        wanted = {id(module) for module in modules}
        for item in self._held.values():
            if id(item.module) in wanted:
                prune(item.module, item.tensor, "custom_from_mask", mask=item.mask != 0)

    def apply_masks(self) -> None:
        """``masking="in_place"``: multiply each weight by its held mask (:meth:`step` does it after every step).

        Call it yourself after changing the weights outside a training step
        (loading a state dict of other weights, say); with
        ``masking="reparametrize"`` there is nothing to do.
        """
        groups: dict[tuple[torch.device, torch.dtype], tuple[list[Tensor], list[Tensor]]] = {}
        for item in self._held.values():
            parameter = item.parameter()
            params, masks = groups.setdefault((parameter.device, parameter.dtype), ([], []))
            params.append(parameter)
            masks.append(item.mask)
        with torch.no_grad():
            for params, masks in groups.values():
                torch._foreach_mul_(params, masks)

    def masks(self) -> dict[str, Tensor]:
        """The bool mask of every pruned tensor of the rules' modules, by qualified name (copies; True keeps)."""
        if self.masking == "in_place":
            return {name: item.mask != 0 for name, item in self._held.items()}
        found: dict[str, Tensor] = {}
        for module in self._modules(self._rules):
            for _, hook in pruning_hooks(module):
                name = hook._tensor_name
                found[self._qualified(module, name)] = default_alive(tensor_state(module, name)).clone()
        return found

    def reparametrize(self) -> None:
        """Switch from ``masking="in_place"`` to ``"reparametrize"``: the held masks become the model's prunes.

        Each held mask is installed with ``custom_from_mask`` (stored as
        ``mask_storage`` says), so the model is a pruned model again, which
        reports, ``pack_masks``, compaction and checkpoints understand; the
        pruner goes on with masking ``"reparametrize"``. All or nothing.
        """
        if self.masking == "reparametrize":
            return
        modules = list({id(item.module): item.module for item in self._held.values()}.values())
        snapshots = [ModuleSnapshot(module) for module in modules]
        try:
            for item in self._held.values():
                prune(item.module, item.tensor, "custom_from_mask", mask=item.mask != 0, mask_storage=self.mask_storage)
        except BaseException:
            for snapshot in snapshots:
                snapshot.restore()
            raise
        self._held.clear()
        self.masking = "reparametrize"

    def _prune_rule(self, driven: _Driven, target: float) -> None:
        counts = [driven.units(self._alive_of(t.module, t.tensor)) for t in driven.targets]
        index = driven.index
        if driven.rule.scope == "global":
            total = sum(units for units, _ in counts)
            amount = round(target * total) - sum(gone for _, gone in counts)
            if amount <= 0:
                return
            try:
                prune_global(
                    [(t.module, t.tensor) for t in driven.targets],
                    driven.rule.strategy,
                    amount=amount,
                    mask_storage=self.mask_storage,
                    **driven.params,
                )
            except PruneplugError as error:
                raise PlanError(str(error), rule=index, field=_field_of(error)) from error
            return
        for t, (units, gone) in zip(driven.targets, counts):
            amount = round(target * units) - gone
            if amount <= 0:
                continue
            try:
                prune(
                    t.module,
                    t.tensor,
                    driven.rule.strategy,
                    amount=amount,
                    mask_storage=self.mask_storage,
                    **driven.params,
                )
            except PruneplugError as error:
                raise PlanError(f"{t.name}: {error}", rule=index, field=_field_of(error)) from error

    @staticmethod
    def _generators(due: list[_Driven]) -> list[tuple[torch.Generator, Tensor]]:
        found = [driven.params.get("generator") for driven in due]
        return [(g, g.get_state()) for g in found if isinstance(g, torch.Generator)]

    @staticmethod
    def _alive(rules: list[_Driven]) -> dict[int, tuple[nn.Module, str, nn.Parameter, Tensor]]:
        """Every parameter of the rules' modules (a bias a strategy prunes with its weight too), by its id.

        Each: ``(module, tensor name, the parameter, bool mask of its unpruned entries)``.
        """
        alive: dict[int, tuple[nn.Module, str, nn.Parameter, Tensor]] = {}
        for driven in rules:
            for module in {id(t.module): t.module for t in driven.targets}.values():
                for name in [name for name, value in module._parameters.items() if value is not None]:
                    tensor = name.removesuffix("_orig")
                    state = tensor_state(module, tensor)
                    if id(state.orig) not in alive:
                        alive[id(state.orig)] = (module, tensor, state.orig, default_alive(state).clone())
        return alive

    def _zero_state(self, before: dict[int, tuple[nn.Module, str, nn.Parameter, Tensor]]) -> None:
        """Zero the optimizer's state tensors of each parameter's shape at the entries newly pruned."""
        assert self.optimizer is not None
        with torch.no_grad():
            for module, tensor, parameter, alive in before.values():
                state = self.optimizer.state.get(parameter)
                if not state:
                    continue
                now = default_alive(tensor_state(module, tensor))
                gone = alive & ~now
                if not bool(gone.any()):
                    continue
                for value in state.values():
                    if isinstance(value, Tensor) and value.shape == parameter.shape:
                        value.masked_fill_(gone.to(value.device), 0)

    # --- saving and resuming ------------------------------------------------------------------

    def _uses_random(self) -> bool:
        """Whether a rule's strategy draws random numbers: it takes a ``generator`` (``random_unstructured`` ...)."""
        registry = get_registry()
        return any("generator" in registry.get(d.rule.strategy).params_model.model_fields for d in self._rules)

    def state_dict(self) -> dict[str, Any]:
        """Where the pruner stands, for :meth:`load_state_dict` on a new pruner (``torch.save`` it).

        It holds the step, each rule's strategy, schedule (its mapping form),
        final sparsity and tensors, and, when a rule prunes at random (its strategy takes a ``generator``), the
        state of torch's CPU generator (and of each generator a rule was
        given). With ``masking="reparametrize"`` the masks are the model's:
        save them with the model's own ``state_dict``; in place, the masks
        the pruner holds are in it too (``"masks"``: bool tensors by
        qualified name), and the model's state dict holds plain weights.
        """
        random = self._uses_random()
        return {
            "version": STATE_VERSION,
            "step": self._step,
            "masking": self.masking,
            "masks": {name: item.mask != 0 for name, item in self._held.items()},
            "rules": self._rules_state(),
            "rng_state": torch.get_rng_state() if random else None,
            "generators": [state for _, state in self._generators(self._rules)],
        }

    def _rules_state(self) -> list[dict[str, Any]]:
        """Each rule as :meth:`state_dict` saves it and :meth:`load_state_dict` checks it."""
        return [
            {
                "strategy": driven.rule.strategy,
                "scope": driven.rule.scope,
                "schedule": driven.schedule.to_spec(),
                "final": driven.final,
                "tensors": [t.name for t in driven.targets],
            }
            for driven in self._rules
        ]

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict`: set the step (and the random generators' states, if saved).

        The pruner must drive the same rules: each rule's strategy, scope,
        schedule, final sparsity and tensors are checked first, and nothing
        changes if one differs. Load the model's state (with
        :func:`pruneplug.load_pruned_state_dict` into an unpruned model)
        before or after: the masks are the model's. With
        ``masking="in_place"`` the masks are the state's (``"masks"``): they
        must name tensors of the rules' modules, with their shapes; tensors of
        those modules pruned on the model are taken over first, then the
        state's masks held and applied.

        Raises:
            PlanError: the state is not a pruner's, or its rules differ from this pruner's (the rule named).
        """
        if not isinstance(state, Mapping) or state.get("version") not in (1, STATE_VERSION):
            raise PlanError(
                f"not a Pruner state_dict of version 1 or {STATE_VERSION} (a mapping with 'version', 'step', "
                f"'rules'): got {type(state).__name__}"
                + (f" of version {state.get('version')!r}" if isinstance(state, Mapping) else "")
            )
        masking = state.get("masking", "reparametrize")  # version 1 knew only the model's masks
        if masking != self.masking:
            raise PlanError(
                f"the state was saved by a pruner with masking={masking!r}, this one has masking={self.masking!r}",
                field="masking",
            )
        step = state.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise PlanError(f"the state's step must be an int >= 0, got {step!r}", field="step")
        saved = state.get("rules")
        mine = self._rules_state()  # (not state_dict(): in place, that copies every held mask)
        if not isinstance(saved, Sequence) or len(saved) != len(mine):
            count = len(saved) if isinstance(saved, Sequence) else saved
            raise PlanError(f"the state holds {count} rules, this pruner drives {len(mine)}", field="rules")
        for index, (theirs, ours) in enumerate(zip(saved, mine)):
            for key in ("strategy", "scope", "schedule", "final", "tensors"):
                got = theirs.get(key) if isinstance(theirs, Mapping) else None
                if key == "tensors" and isinstance(got, (list, tuple)):
                    got = list(got)
                if got != ours[key]:
                    raise PlanError(
                        f"the saved state's {key} is {got!r}, this pruner's is {ours[key]!r}: resume with the "
                        "rules and schedules the state was saved with",
                        rule=index,
                        field=key,
                    )
        generators = self._generators(self._rules)
        saved_generators = state.get("generators") or []
        if len(saved_generators) != len(generators):
            raise PlanError(
                f"the state holds {len(saved_generators)} generator states, this pruner's rules have {len(generators)}",
                field="generators",
            )
        held = self._held_from(state.get("masks")) if masking == "in_place" else {}
        rng = state.get("rng_state")
        if rng is not None:
            torch.set_rng_state(rng)
        for (generator, _), saved_state in zip(generators, saved_generators):
            generator.set_state(saved_state)
        if masking == "in_place":
            self._take_over(self._modules(self._rules))  # a model loaded pruned: its prunes give way to the state's
            self._held = held
            self.apply_masks()
        self._step = step

    def _held_from(self, saved: object) -> dict[str, _Held]:
        """The held masks of a saved state, checked against the model (raises :class:`PlanError`, changes nothing)."""
        if not isinstance(saved, Mapping):
            raise PlanError(
                "an in-place pruner's state holds its masks: 'masks' must map tensor names to bool masks, got "
                f"{type(saved).__name__}",
                field="masks",
            )
        ours = {id(module) for module in self._modules(self._rules)}
        modules = {name: module for name, module in self.model.named_modules() if id(module) in ours}
        held: dict[str, _Held] = {}
        for name, mask in saved.items():
            prefix, _, tensor = str(name).rpartition(".")
            module = modules.get(prefix)
            params = {} if module is None else module._parameters
            parameter = params.get(tensor, params.get(f"{tensor}_orig"))
            if module is None or parameter is None:
                raise PlanError(
                    f"the state holds a mask for {name!r}, which no module of the rules has as a parameter",
                    field="masks",
                )
            if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.shape != parameter.shape:
                shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
                raise PlanError(
                    f"the state's mask for {name!r} must be a bool tensor of shape {tuple(parameter.shape)}, "
                    f"got {shape}",
                    field="masks",
                )
            held[name] = _Held(name, module, tensor, mask.to(device=parameter.device, dtype=parameter.dtype))
        return held
