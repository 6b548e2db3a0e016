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
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..api import make_schedule, prune, prune_global
from ..api.schedules import ScheduleLike
from ..core.commit import ModuleSnapshot
from ..core.state import default_alive, tensor_state
from ..errors import (
    InvalidAmountError,
    InvalidDimError,
    InvalidParametersError,
    InvalidScheduleError,
    PruneplugError,
    ScheduleNotFoundError,
    TensorNotFoundError,
)
from ..plans import Plan, PlanError, ResolvedRule, Rule, Target, load_plan, parse_plan, resolve_plan
from ..registry import get_registry
from ..schedules.base import Schedule
from ..selection.slices import alive_slices, normalize_dim
from ..statistics.spec import NeedsStatistics
from ..storage.formats import MaskStorage, check_storage

__all__ = ["Pruner", "RulesLike", "STATE_VERSION", "check_rules"]

RulesLike = Plan | str | os.PathLike[str] | Sequence[Rule | Mapping[str, Any]]
"""What :class:`Pruner` takes as rules: a plan, a plan file's path, or a list of rules (mappings or :class:`Rule`)."""

STATE_VERSION = 1
"""The version of :meth:`Pruner.state_dict`'s layout."""

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

    def units(self, target: Target) -> tuple[int, int]:
        """``(total, pruned)`` entries of ``target`` (slices along :attr:`dim` for a structured strategy)."""
        alive = default_alive(tensor_state(target.module, target.tensor))
        if self.dim is None:
            return alive.numel(), alive.numel() - int(alive.count_nonzero())
        kept = alive_slices(alive, normalize_dim(self.dim, alive.dim()))
        return kept.numel(), kept.numel() - int(kept.count_nonzero())


def _split_rules(rules: RulesLike) -> tuple[Plan, list[ScheduleLike | None]]:
    """The rules as a validated :class:`Plan`, and each rule's own schedule (``None``: the pruner's)."""
    if isinstance(rules, Plan):
        return rules, [None] * len(rules.rules)
    if isinstance(rules, (str, os.PathLike)):
        plan = load_plan(rules)
        return plan, [None] * len(plan.rules)
    if isinstance(rules, Mapping) or not isinstance(rules, Sequence) or not rules:
        raise PlanError(
            "rules must be a pruneplug.plans.Plan, a plan file's path, or a non-empty list of rules "
            f"(mappings with the fields of a plan rule), got {type(rules).__name__}"
        )
    data: list[object] = []
    schedules: list[ScheduleLike | None] = []
    for index, rule in enumerate(rules):
        if isinstance(rule, Rule):
            data.append(rule)
            schedules.append(None)
        elif isinstance(rule, Mapping):
            fields = dict(rule)
            schedule = fields.pop("schedule", None)
            schedules.append(schedule)
            data.append(_with_amount(fields, schedule, index))
        else:
            raise PlanError(f"a rule is a mapping of a plan rule's fields, got {type(rule).__name__}", rule=index)
    return parse_plan({"rules": data}), schedules


def _with_amount(fields: dict[str, Any], schedule: object, index: int) -> dict[str, Any]:
    """A rule without ``params.amount`` whose own schedule gives ``final`` gets it as the amount, to validate."""
    params = fields.get("params", {})
    if not isinstance(params, Mapping) or "amount" in params or schedule is None:
        return fields
    try:
        final = make_schedule(schedule).final  # type: ignore[arg-type]
    except PruneplugError as error:
        raise PlanError(error.reason, rule=index, field="schedule") from error
    return fields if final is None else {**fields, "params": {**params, "amount": final}}


def _schedule_for(given: ScheduleLike | None, default: Schedule | None, index: int) -> Schedule:
    if given is None:
        if default is None:
            raise PlanError(
                "no schedule: give the Pruner one (schedule=...) or the rule its own ('schedule' in the rule)",
                rule=index,
                field="schedule",
            )
        return default
    try:
        return make_schedule(given)
    except (InvalidScheduleError, ScheduleNotFoundError) as error:
        raise PlanError(str(error), rule=index, field="schedule") from error


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
    if schedule.final is None and not isinstance(amount, float):
        raise PlanError(
            f"the rule's amount is its final sparsity, a fraction in [0, 1), got {amount!r} (or give the schedule "
            "a final of its own)",
            rule=index,
            field="params.amount",
        )
    try:
        final = schedule.resolve_final(amount if schedule.final is None else None)
    except InvalidScheduleError as error:
        raise PlanError(str(error), rule=index, field="params.amount") from error
    dim = getattr(validated, "dim", None) if spec.kind == "structured" else None
    return _Driven(index, rule, resolved.targets, schedule, final, dim, params)


def _prepare(
    rules: RulesLike, schedule: ScheduleLike | None, mask_storage: MaskStorage | None
) -> tuple[Plan, list[Schedule], MaskStorage | None]:
    """The validated plan, each rule's schedule and the mask storage: all the checks that need no model."""
    plan, own = _split_rules(rules)
    if plan.compact:
        raise PlanError("the Pruner does not compact while training; compact after it", field="compact")
    try:
        default = None if schedule is None else make_schedule(schedule)
    except PruneplugError as error:
        raise PlanError(str(error), field="schedule") from error
    try:
        storage = check_storage(mask_storage)
    except PruneplugError as error:
        raise PlanError(str(error), field="mask_storage") from error
    schedules = [_schedule_for(given, default, index) for index, given in enumerate(own)]
    for index, rule in enumerate(plan.rules):  # refused before data-aware rules ask for calibration data
        _check_drivable(rule, index)
    return plan, schedules, storage


def check_rules(
    rules: RulesLike, *, schedule: ScheduleLike | None = None, mask_storage: MaskStorage | None = None
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
    _prepare(rules, schedule, mask_storage)


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
        schedule: the schedule of every rule without its own: a
            :class:`~pruneplug.Schedule` or what :func:`pruneplug.make_schedule` takes.
        optimizer: its per-parameter state (momentum, Adam's moments: the
            state tensors of the parameter's shape) is zeroed at the entries
            each pruning step prunes, so that it does not carry them on.
        mask_storage: ``"bool"`` or ``"packed"`` (see :func:`pruneplug.prune`);
            default: the plan's ``mask_storage``, else as the masks are stored now.

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
    ) -> None:
        if not isinstance(model, nn.Module):
            raise PlanError(f"the Pruner prunes a torch.nn.Module, got {type(model).__name__}")
        plan, schedules, storage = _prepare(rules, schedule, mask_storage)
        resolved = resolve_plan(model, plan)
        self.model = model
        self.optimizer = optimizer
        self.mask_storage: MaskStorage | None = storage if storage is not None else plan.mask_storage
        self._rules = [_drive(item, schedules[item.index]) for item in resolved if item.skipped is None]
        self._step = 0

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
                units, gone = driven.units(target)
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

        Raises:
            PlanError: a rule failed (named with the field at fault); every
                rule of this step is undone, the optimizer's state untouched,
                and the step not counted.
            InvalidScheduleError: ``step`` is not an int >= 0.
        """
        at = self._step if step is None else step
        due = [driven for driven in self._rules if driven.schedule.prunes_at(at)]
        if due:
            self._prune(due, at)
        self._step = at + 1

    def _prune(self, due: list[_Driven], step: int) -> None:
        modules = {id(t.module): t.module for driven in due for t in driven.targets}
        snapshots = [ModuleSnapshot(module) for module in modules.values()]
        rng = torch.get_rng_state()
        generators = self._generators(due)
        before = self._alive(due) if self.optimizer is not None else {}
        try:
            for driven in due:
                self._prune_rule(driven, driven.schedule.at(step, driven.final))
        except BaseException:
            for snapshot in snapshots:
                snapshot.restore()
            torch.set_rng_state(rng)
            for generator, state in generators:
                generator.set_state(state)
            raise
        if self.optimizer is not None:
            self._zero_state(before)

    def _prune_rule(self, driven: _Driven, target: float) -> None:
        counts = [driven.units(t) for t in driven.targets]
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
        given). The masks are the model's: save them with the model's own
        ``state_dict``.
        """
        random = self._uses_random()
        return {
            "version": STATE_VERSION,
            "step": self._step,
            "rules": [
                {
                    "strategy": driven.rule.strategy,
                    "scope": driven.rule.scope,
                    "schedule": driven.schedule.to_spec(),
                    "final": driven.final,
                    "tensors": [t.name for t in driven.targets],
                }
                for driven in self._rules
            ],
            "rng_state": torch.get_rng_state() if random else None,
            "generators": [state for _, state in self._generators(self._rules)],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict`: set the step (and the random generators' states, if saved).

        The pruner must drive the same rules: each rule's strategy, scope,
        schedule, final sparsity and tensors are checked first, and nothing
        changes if one differs. Load the model's state (with
        :func:`pruneplug.load_pruned_state_dict` into an unpruned model)
        before or after: the masks are the model's.

        Raises:
            PlanError: the state is not a pruner's, or its rules differ from this pruner's (the rule named).
        """
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            raise PlanError(
                f"not a Pruner state_dict of version {STATE_VERSION} (a mapping with 'version', 'step', 'rules'): "
                f"got {type(state).__name__}"
                + (f" of version {state.get('version')!r}" if isinstance(state, Mapping) else "")
            )
        step = state.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise PlanError(f"the state's step must be an int >= 0, got {step!r}", field="step")
        saved = state.get("rules")
        mine = self.state_dict()["rules"]
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
        rng = state.get("rng_state")
        if rng is not None:
            torch.set_rng_state(rng)
        for (generator, _), saved_state in zip(generators, saved_generators):
            generator.set_state(saved_state)
        self._step = step
