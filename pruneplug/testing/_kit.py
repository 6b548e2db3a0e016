"""The conformance checks: hypothesis properties every pruning strategy must satisfy.

Each check is a hypothesis property over small tensors (shapes, dtypes and
values drawn -- normal values, many ties, many zeros), the strategy's
parameters (fixed, drawn, or drawn per shape) and earlier pruning states. A
check that fails raises :class:`ConformanceError` naming the strategy, the
check and what went wrong, with hypothesis's falsifying example.

The checks go through the public API (:func:`pruneplug.prune`,
:func:`pruneplug.prune_global`, :func:`pruneplug.remove`) -- exactly what a
user of the strategy calls -- plus the strategy's own ``compute_mask`` as
torch and :mod:`pruneplug.compat` call it.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import torch
from hypothesis import HealthCheck, Phase, assume, given, settings as Settings, strategies as st
from hypothesis.strategies import DataObject, SearchStrategy
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from ..api.prune import is_pruned, prune, prune_global, pruning_history, remove
from ..core.reparam import MaskStorage
from ..errors import InvalidAmountError, PruneplugError, cross_tensor_hint
from ..registry import StrategySpec, get_registry, strategy_spec
from ..strategies import CustomFromMask, StructuredStrategy, UnstructuredStrategy
from ..strategies._base import checked_protected, checked_protected_slices

__all__ = [
    "CHECKS",
    "DEFAULT_MAX_EXAMPLES",
    "Conformance",
    "ConformanceError",
    "ConformanceReport",
    "ParamsLike",
    "Shape",
    "StrategyLike",
    "amounts",
    "check_strategy",
]

Shape: TypeAlias = tuple[int, ...]
"""A tensor shape, as the ``shapes`` strategy draws it."""

StrategyLike: TypeAlias = str | type | StrategySpec
"""What can be checked: a registered name, a strategy class, or a :class:`pruneplug.StrategySpec`."""

ParamsSource: TypeAlias = Mapping[str, Any] | SearchStrategy[Mapping[str, Any]]
ParamsLike: TypeAlias = ParamsSource | Callable[[Shape], ParamsSource] | None
"""The strategy's parameters for the checks, as one of:

* a mapping of fixed values -- any value that is a hypothesis strategy is drawn per example
  (``{"n": 2, "amount": st.floats(0, 1)}``);
* a hypothesis strategy of such mappings;
* a function of the tensor's shape returning either (for parameters that must fit the
  tensor, such as a mask of its shape; the ``global`` check then prunes tensors of one
  shape together, so that the parameters fit them all).

``amount`` (if the strategy has one) and, for structured strategies, ``dim`` are drawn by
the kit when left out, so the checks cover counts, fractions, 0 and everything that may be
pruned: for a strategy that protects entries (``protected``, ``protected_slices``) the kit
draws within what is still unpruned and not protected, at every step.
"""

CHECKS: tuple[str, ...] = ("mask", "count", "iterative", "rollback", "determinism", "remove", "global")
"""Every check, in the order :func:`check_strategy` runs them.

``mask``
    The stored mask is ``torch.bool`` of the tensor's shape, ``weight`` is exactly
    ``weight_orig * weight_mask``, ``weight_orig`` is the original parameter with its
    values untouched, and ``compute_mask(t, default_mask)`` called the torch way (float
    mask) returns 0/1 values agreeing with the native mask.
``count``
    Strategies of kind ``unstructured`` / ``structured`` with an ``amount`` prune exactly
    ``amount`` of the still-unpruned entries / slices (an int is a count, a float a
    fraction rounded with Python's ``round``), structured ones whole slices only --
    starting from arbitrary earlier pruning -- and never an entry or slice the strategy
    protects (this last part applies to every check that prunes).
``iterative``
    Pruning again and again: masks only lose ones, the history grows by one each time,
    ``weight_orig`` is never modified.
``rollback``
    A prune that fails -- an unknown parameter, the ``invalid_params`` you name, an
    ``amount`` larger than what is left, an exception inside ``compute_mask`` -- raises
    a :class:`pruneplug.PruneplugError` and leaves parameters, buffers, hooks, state_dict,
    the module's class and every value exactly as they were. An ``amount`` that reaches
    into protected entries must raise :class:`pruneplug.InvalidAmountError`.
``determinism``
    The same tensor, parameters and ``torch.manual_seed`` give the same mask.
``remove``
    :func:`pruneplug.remove` keeps the effective tensor bit for bit in the original
    ``Parameter`` object and leaves no ``_orig``, ``_mask`` or hook; so does
    ``torch.nn.utils.prune.remove`` on a ``copy.deepcopy`` of the pruned module.
``global``
    Unstructured strategies work with :func:`pruneplug.prune_global` over several
    tensors: valid, monotone masks and, with an ``amount``, exactly that many entries
    pruned across all of them, none protected; an ``amount`` over what may be pruned
    across them raises :class:`pruneplug.InvalidAmountError` and changes nothing.
"""

DEFAULT_MAX_EXAMPLES = 20
"""Examples per check by default: enough to find shape, tie and iteration bugs in a second or two."""

_UNKNOWN_PARAMETER = "pruneplug_testing_unknown_parameter"
_SEEDS = st.integers(0, 2**32 - 1)
_FRACTIONS = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
_BITS = {
    torch.float64: torch.int64,
    torch.float32: torch.int32,
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
}


class ConformanceError(AssertionError):
    """A strategy fails a conformance check.

    An ``AssertionError``, so test runners report it as a failed test.

    Attributes:
        strategy: the strategy's name.
        failures: ``{check: message}`` for every check that failed.
    """

    def __init__(self, strategy: str, failures: Mapping[str, str]) -> None:
        self.strategy = strategy
        self.failures = dict(failures)
        lines = [f"strategy {strategy!r} fails {len(self.failures)} conformance check(s):"]
        lines += [f"[{check}] {message}" for check, message in self.failures.items()]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class ConformanceReport:
    """What :func:`check_strategy` ran.

    Attributes:
        strategy: the strategy's name.
        passed: the checks that ran and passed, in order.
        skipped: ``{check: why}`` for checks that do not apply to this strategy.
    """

    strategy: str
    passed: tuple[str, ...]
    skipped: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        text = f"{self.strategy}: passed {', '.join(self.passed) or 'nothing'}"
        if self.skipped:
            text += "; skipped " + "; ".join(f"{check} ({why})" for check, why in self.skipped.items())
        return text


class _Failure(AssertionError):
    """One property violated (turned into :class:`ConformanceError` by the caller)."""


class _InjectedFailure(RuntimeError):
    """Raised by the rollback check after the strategy's own ``compute_mask`` ran."""


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise _Failure(message)


class _Holder(nn.Module):
    """A module owning one parameter ``weight`` of any shape (what the checks prune)."""

    def __init__(self, values: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(values)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight.sum()


def amounts(available: int, prunable: int | None = None) -> SearchStrategy[int | float]:
    """Every kind of valid ``amount`` for ``available`` units: counts ``0..available`` and fractions.

    Use it when your parameters are drawn per shape and include ``amount``.
    ``prunable``: how many of the ``available`` units may be pruned, when the
    strategy protects some; amounts are then drawn within it: counts up to
    ``prunable``, fractions up to ``prunable / available`` (a fraction still
    counts over all ``available``).

    >>> from hypothesis import find
    >>> find(amounts(5), lambda a: isinstance(a, int) and a > 3)
    4
    >>> find(amounts(10, prunable=4), lambda a: isinstance(a, int) and a > 3)
    4
    """
    if prunable is None or prunable >= available:
        return st.one_of(st.integers(0, available), st.sampled_from(_FRACTIONS), st.floats(0.0, 1.0))
    share = prunable / available

    def fits(fraction: float) -> bool:
        return round(fraction * available) <= prunable

    return st.one_of(
        st.integers(0, prunable),
        st.sampled_from([f for f in (*_FRACTIONS, share) if fits(f)]),
        st.floats(0.0, share).filter(fits),
    )


def _same_bits(a: Tensor, b: Tensor) -> bool:
    """Same dtype, shape and bits (NaN equals NaN, -0.0 differs from 0.0)."""
    a, b = a.detach(), b.detach()
    if a.dtype != b.dtype or a.shape != b.shape or a.device != b.device:
        return False
    bits = _BITS.get(a.dtype)
    if bits is None:
        return torch.equal(a, b)
    return torch.equal(a.contiguous().view(bits), b.contiguous().view(bits))


def _weight(module: nn.Module) -> Tensor:
    """What ``module.weight`` holds now (the masked tensor while pruned)."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, Tensor):
        raise _Failure(f"module.weight is {type(weight).__name__}, not a tensor")
    return weight.detach()


def _orig(module: nn.Module) -> Tensor:
    """``module.weight_orig`` (a failure if it is missing)."""
    orig = module._parameters.get("weight_orig")
    if orig is None:
        raise _Failure("there is no weight_orig parameter after pruning")
    return orig


def _alive(module: nn.Module) -> Tensor:
    """The bool mask of entries of ``module.weight`` still unpruned (all True if not pruned)."""
    mask = module._buffers.get("weight_mask")
    if mask is None:
        return torch.ones(module._parameters["weight"].shape, dtype=torch.bool)  # type: ignore[union-attr]
    return mask.detach() != 0


def _alive_slices(mask: Tensor, dim: int) -> Tensor:
    others = [d for d in range(mask.dim()) if d != dim]
    return mask.any(dim=others) if others else mask.clone()


def _expected(amount: int | float, available: int) -> int:
    """pruneplug's (and torch's) rule: an int is a count, a float a fraction rounded with ``round``."""
    return int(amount) if isinstance(amount, int) else round(float(amount) * available)


def _pruning_hooks(module: nn.Module) -> list[torch_prune.BasePruningMethod]:
    return [h for h in module._forward_pre_hooks.values() if isinstance(h, torch_prune.BasePruningMethod)]


def _removed_cleanly(module: nn.Module, effective: Tensor, where: str) -> None:
    """After ``remove``: a plain ``weight`` Parameter holding ``effective`` bit for bit, and nothing else left."""
    _expect(isinstance(module._parameters.get("weight"), nn.Parameter), f"after {where}, weight is not a Parameter")
    _expect(_same_bits(_weight(module), effective), f"{where} changed the effective tensor")
    left = [n for n in ("weight_orig", "weight_mask") if n in module._parameters or n in module._buffers]
    _expect(not left, f"after {where}, {' and '.join(left)} remain")
    _expect(not _pruning_hooks(module) and not is_pruned(module), f"after {where}, a pruning hook remains")
    keys = list(module.state_dict())
    _expect(keys == ["weight"], f"after {where}, the state_dict keys are {keys}")
    _expect(isinstance(module, _Holder), f"after {where}, the module is a {type(module).__qualname__}")
    module(torch.ones(()))


@dataclass
class _StateSnapshot:
    """Everything a failed prune must leave as it was."""

    module_class: type
    parameters: list[tuple[str, int, Tensor]]
    buffers: list[tuple[str, int, Tensor]]
    hooks: list[tuple[int, int]]
    state: list[tuple[str, Tensor]]
    weight: Tensor
    history: list[int]

    @classmethod
    def of(cls, module: nn.Module) -> _StateSnapshot:
        return cls(
            module_class=type(module),
            parameters=[(n, id(p), p.detach().clone()) for n, p in module.named_parameters()],
            buffers=[(n, id(b), b.detach().clone()) for n, b in module.named_buffers()],
            hooks=[(key, id(hook)) for key, hook in module._forward_pre_hooks.items()],
            state=[(k, v.detach().clone()) for k, v in module.state_dict().items()],
            weight=_weight(module).clone(),
            history=[id(h) for h in pruning_history(module, "weight")],
        )

    def differences(self, other: _StateSnapshot) -> list[str]:
        out = []
        if self.module_class is not other.module_class:
            out.append(
                f"the module's class changed from {self.module_class.__qualname__} to {other.module_class.__qualname__}"
            )
        for what, mine, theirs in (
            ("parameters", self.parameters, other.parameters),
            ("buffers", self.buffers, other.buffers),
        ):
            if [(n, i) for n, i, _ in mine] != [(n, i) for n, i, _ in theirs]:
                out.append(
                    f"{what} changed: {[n for n, _, _ in mine]} -> {[n for n, _, _ in theirs]} (or other objects)"
                )
            elif not all(_same_bits(a, b) for (_, _, a), (_, _, b) in zip(mine, theirs)):
                out.append(f"the values of the {what} changed")
        if self.hooks != other.hooks:
            out.append("the forward pre-hooks changed")
        if [k for k, _ in self.state] != [k for k, _ in other.state]:
            out.append(f"state_dict keys changed: {[k for k, _ in self.state]} -> {[k for k, _ in other.state]}")
        elif not all(_same_bits(a, b) for (_, a), (_, b) in zip(self.state, other.state)):
            out.append("state_dict values changed")
        if not _same_bits(self.weight, other.weight):
            out.append("module.weight changed")
        if self.history != other.history:
            out.append("the pruning history changed")
        return out


def _resolve(strategy: StrategyLike) -> StrategySpec:
    if isinstance(strategy, StrategySpec):
        return strategy
    if isinstance(strategy, str):
        return get_registry().get(strategy)
    return strategy_spec(strategy, provider="pruneplug.testing")


def _failing_spec(spec: StrategySpec) -> StrategySpec | None:
    """The strategy, but ``compute_mask`` raises after the strategy's own code ran (for rollback)."""
    base = spec.strategy_class

    def compute_mask(self: Any, t: Tensor, default_mask: Tensor) -> Tensor:
        base.compute_mask(self, t, default_mask)
        raise _InjectedFailure("failure injected by pruneplug.testing after the strategy's compute_mask ran")

    try:
        failing = type(base.__name__, (base,), {"compute_mask": compute_mask, "__module__": base.__module__})
    except TypeError:  # pragma: no cover - a class that refuses subclasses
        return None
    return dataclasses.replace(spec, strategy_class=failing)


class Conformance:
    """The conformance checks of one strategy, configured once and run one by one.

    :func:`check_strategy` and :class:`~pruneplug.testing.StrategyConformance` are
    built on it; use it directly to run single checks (``Conformance("nm").check("mask")``).

    Args:
        strategy: a registered name, a strategy class or a :class:`pruneplug.StrategySpec`.
        params: the strategy's parameters (see :data:`ParamsLike`).
        shapes: the tensor shapes to try (default: 1 to 3 dims of size 1 to 5; at least 2
            dims for structured strategies).
        dtypes: the floating dtypes to try.
        invalid_params: parameter sets the strategy must reject (merged over valid drawn
            ones), each checked for rollback -- e.g. ``[{"n": 4, "m": 4}]``.
        max_examples: hypothesis examples per check.
        settings: hypothesis settings to start from (default: the current profile).
    """

    def __init__(
        self,
        strategy: StrategyLike,
        params: ParamsLike = None,
        *,
        shapes: SearchStrategy[Shape] | None = None,
        dtypes: Sequence[torch.dtype] = (torch.float32,),
        invalid_params: Sequence[Mapping[str, Any]] = (),
        max_examples: int = DEFAULT_MAX_EXAMPLES,
        settings: Settings | None = None,
    ) -> None:
        self.spec = _resolve(strategy)
        self.params = params
        min_dims = 2 if self.spec.kind == "structured" else 1
        self.shapes = (
            shapes if shapes is not None else st.lists(st.integers(1, 5), min_size=min_dims, max_size=3).map(tuple)
        )
        self.dtypes = tuple(dtypes)
        if not self.dtypes or not all(d.is_floating_point for d in self.dtypes):
            raise ValueError(f"dtypes must be floating dtypes (parameters are), got {dtypes!r}")
        self.invalid_params = [dict(p) for p in invalid_params]
        parent = settings if settings is not None else (Settings.default or Settings())
        self.settings = Settings(
            parent,
            max_examples=max_examples,
            # the explain phase re-runs failing examples under a tracer: seconds per failure, for a hint
            phases=[phase for phase in parent.phases if phase is not Phase.explain],
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
        )
        fields = self.spec.params_model.model_fields
        self._counts = self.spec.kind in ("unstructured", "structured") and "amount" in fields

    # --- which checks apply ---------------------------------------------------------------

    def skip_reason(self, check: str) -> str | None:
        """Why ``check`` does not apply to this strategy, or ``None`` if it does."""
        if check not in CHECKS:
            raise ValueError(f"unknown check {check!r}; the checks are {', '.join(CHECKS)}")
        if check == "count" and not self._counts:
            if "amount" not in self.spec.params_model.model_fields:
                return "the strategy has no 'amount' parameter"
            return f"kind {self.spec.kind!r} has no counting rule (only unstructured and structured do)"
        if check == "global" and self.spec.kind != "unstructured":
            return f"prune_global needs kind 'unstructured'; {cross_tensor_hint(self.spec.name, self.spec.kind)}"
        return None

    def check(self, name: str) -> None:
        """Run one check; raise :class:`ConformanceError` if the strategy fails it.

        Raises ``ValueError`` for an unknown check and for one that does not apply
        (see :meth:`skip_reason`).
        """
        reason = self.skip_reason(name)
        if reason is not None:
            raise ValueError(f"check {name!r} does not apply to {self.spec.name!r}: {reason}")
        body: Callable[[DataObject], None] = getattr(self, f"_{name}")

        @self.settings
        @given(data=st.data())
        def run(data: DataObject) -> None:
            body(data)

        # One database entry (and one derandomized seed) per strategy and check, not one for all.
        inner = getattr(getattr(run, "hypothesis", None), "inner_test", None)
        if inner is not None:
            cls = self.spec.strategy_class
            key = f"pruneplug.testing:{cls.__module__}.{cls.__qualname__}:{self.spec.name}:{name}"
            inner._hypothesis_internal_add_digest = key.encode()
        try:
            with torch.random.fork_rng(devices=[]):  # the checks seed torch's RNG; the caller's stream is kept
                run()
        except Exception as error:
            message = str(error) if isinstance(error, _Failure) else f"{type(error).__name__}: {error}"
            notes = [n for n in getattr(error, "__notes__", ()) if isinstance(n, str)]
            raise ConformanceError(self.spec.name, {name: "\n".join([message, *notes])}) from error

    # --- drawing examples -------------------------------------------------------------------

    def _shape_dtype(self, data: DataObject) -> tuple[Shape, torch.dtype]:
        shape = tuple(data.draw(self.shapes, label="shape"))
        dtype = data.draw(st.sampled_from(self.dtypes), label="dtype")
        return shape, dtype

    @staticmethod
    def _values(data: DataObject, shape: Shape, dtype: torch.dtype) -> Tensor:
        seed = data.draw(_SEEDS, label="values seed")
        style = data.draw(st.sampled_from(("normal", "ties", "zeros")), label="values")
        generator = torch.Generator().manual_seed(seed)
        if style == "ties":
            values = torch.randint(-2, 3, shape, generator=generator).to(torch.float64)
        else:
            values = torch.randn(shape, generator=generator, dtype=torch.float64)
            if style == "zeros":
                values = values * (torch.rand(shape, generator=generator) < 0.5)
        return values.to(dtype)

    def _module(self, data: DataObject, shape: Shape | None = None) -> tuple[_Holder, Tensor]:
        """A module holding drawn values (of ``shape`` if given, else of a drawn shape)."""
        if shape is None:
            shape, dtype = self._shape_dtype(data)
        else:
            dtype = data.draw(st.sampled_from(self.dtypes), label="dtype")
        values = self._values(data, shape, dtype)
        return _Holder(values.clone()), values

    @staticmethod
    def _preprune(data: DataObject, module: nn.Module) -> None:
        """Maybe prune ``module.weight`` first with a random mask (an arbitrary earlier state).

        The earlier mask may be stored bit-packed, and later prunes keep it so: the strategy
        then prunes (locally and globally) on top of a :class:`~pruneplug.PackedMask`.
        """
        if not data.draw(st.booleans(), label="pruned before"):
            return
        shape = module._parameters["weight"].shape  # type: ignore[union-attr]
        seed = data.draw(_SEEDS, label="earlier mask seed")
        keep = torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < 0.7
        storage: MaskStorage = data.draw(st.sampled_from(["bool", "packed"]), label="earlier mask storage")
        prune(module, "weight", CustomFromMask, mask=keep, mask_storage=storage)

    def _dim(self, params: Mapping[str, Any], ndim: int) -> int:
        dim = params.get("dim")
        if dim is None:
            info = self.spec.params_model.model_fields.get("dim")
            dim = info.default if info is not None and isinstance(info.default, int) else -1
        return int(dim) % ndim

    def _available(self, alive: Tensor, params: Mapping[str, Any]) -> int:
        if self.spec.kind == "structured" and alive.dim() >= 1:
            return int(_alive_slices(alive, self._dim(params, alive.dim())).sum())
        return int(alive.sum())

    def _protected(self, values: Tensor, params: Mapping[str, Any]) -> Tensor | None:
        """What the strategy protects in ``values``: entries (unstructured) or slices along ``dim`` (structured).

        ``None`` when nothing is (the strategy does not override ``protected`` /
        ``protected_slices``, or returns ``None``).
        """
        cls = self.spec.strategy_class
        unstructured = issubclass(cls, UnstructuredStrategy) and cls.protected is not UnstructuredStrategy.protected
        structured = (
            issubclass(cls, StructuredStrategy) and cls.protected_slices is not StructuredStrategy.protected_slices
        )
        if not (unstructured or structured):
            return None  # (no instance made for the common case)
        asked = {**params, "amount": 0} if "amount" in self.spec.params_model.model_fields else dict(params)
        try:
            method = self.spec.create(**asked)
            if isinstance(method, UnstructuredStrategy):
                return checked_protected(method, values)
            if isinstance(method, StructuredStrategy):
                return checked_protected_slices(method, values, self._dim(params, values.dim()))
        except Exception as error:
            raise _Failure(
                f"asking the strategy what it protects (with {_show(asked)}) raised {type(error).__name__}: {error}"
            ) from error
        return None

    def _protected_alive(self, values: Tensor, alive: Tensor, params: Mapping[str, Any]) -> Tensor | None:
        """The protected entries (or slices) among the still-unpruned ones, or ``None`` if nothing is protected."""
        guard = self._protected(values, params)
        if guard is None:
            return None
        if self.spec.kind == "structured":
            return guard & _alive_slices(alive, self._dim(params, alive.dim()))
        return guard & alive

    def _params(self, data: DataObject, values: Tensor, alive: Tensor) -> dict[str, Any]:
        shape = tuple(values.shape)
        source: Any = self.params if self.params is not None else {}
        if not isinstance(source, (Mapping, SearchStrategy)) and callable(source):
            source = source(shape)
        if isinstance(source, SearchStrategy):
            source = data.draw(source, label="params")
        if not isinstance(source, Mapping):
            raise TypeError(f"params must give a mapping of parameter values, got {type(source).__name__}")
        params = {k: data.draw(v, label=k) if isinstance(v, SearchStrategy) else v for k, v in source.items()}
        fields = self.spec.params_model.model_fields
        if self.spec.kind == "structured" and "dim" in fields and "dim" not in params and shape:
            params["dim"] = data.draw(st.integers(-len(shape), len(shape) - 1), label="dim")
        available = self._available(alive, params)
        kept = self._protected_alive(values, alive, params) if self._counts else None
        prunable = available if kept is None else available - int(kept.sum())
        if "amount" in fields and "amount" not in params:
            params["amount"] = data.draw(amounts(available, prunable), label="amount")
        amount = params.get("amount")
        if self._counts and isinstance(amount, (int, float)) and not isinstance(amount, bool):
            # a fixed amount larger than what may be pruned is a (correctly) failing prune, not an example
            assume(_expected(amount, available) <= prunable)
        return params

    def _prune(self, module: nn.Module, params: Mapping[str, Any], seed: int, what: str = "a valid prune") -> None:
        torch.manual_seed(seed)
        try:
            prune(module, "weight", self.spec, **params)
        except Exception as error:
            raise _Failure(f"{what} with {_show(params)} failed: {type(error).__name__}: {error}") from error

    # --- the checks ---------------------------------------------------------------------------

    def _step(
        self, before: Tensor, after: Tensor, params: Mapping[str, Any], module: nn.Module, values: Tensor
    ) -> None:
        """What every successful prune must satisfy (and exact counts where they apply)."""
        _expect(after.dtype == torch.bool, f"the stored mask is {after.dtype}; native masks are torch.bool")
        _expect(after.shape == before.shape, f"the mask has shape {tuple(after.shape)}, not {tuple(before.shape)}")
        revived = int((after & ~before).sum())
        _expect(
            revived == 0, f"{revived} pruned entr{'y' if revived == 1 else 'ies'} came back; masks may only lose ones"
        )
        orig = _orig(module)
        _expect(_same_bits(orig, values), "weight_orig does not hold the original values any more")
        _expect(_same_bits(_weight(module), orig.detach() * after), "module.weight is not weight_orig * weight_mask")
        self._kept_protected(values, before, after, params, "the prune")
        if not self._counts or "amount" not in params:
            return
        amount = params["amount"]
        if self.spec.kind == "unstructured":
            available = int(before.sum())
            pruned = int((before & ~after).sum())
            expected = _expected(amount, available)
            _expect(
                pruned == expected,
                f"amount={amount!r} pruned {pruned} of the {available} unpruned entries; expected exactly {expected}",
            )
            return
        dim = self._dim(params, before.dim())
        slices_before, slices_after = _alive_slices(before, dim), _alive_slices(after, dim)
        available = int(slices_before.sum())
        gone = available - int(slices_after.sum())
        expected = _expected(amount, available)
        _expect(
            gone == expected,
            f"amount={amount!r} pruned {gone} of the {available} unpruned slices along dim {dim}; "
            f"expected exactly {expected}",
        )
        view = [1] * before.dim()
        view[dim] = -1
        _expect(
            torch.equal(after, before & slices_after.reshape(view)),
            f"it pruned entries without pruning their whole slice along dim {dim}",
        )

    def _kept_protected(
        self, values: Tensor, before: Tensor, after: Tensor, params: Mapping[str, Any], what: str
    ) -> None:
        """Every entry (slice) the strategy protects that was unpruned before is still unpruned after."""
        if not self._counts:
            return
        kept = self._protected_alive(values, before, params)
        if kept is None:
            return
        if self.spec.kind == "structured":
            dim = self._dim(params, before.dim())
            lost = int((kept & ~_alive_slices(after, dim)).sum())
            unit = f"slice{'' if lost == 1 else 's'} along dim {dim} that protected_slices(t, dim) declares"
        else:
            lost = int((kept & ~after).sum())
            unit = f"entr{'y' if lost == 1 else 'ies'} that protected(t) declares"
        _expect(lost == 0, f"{what} with {_show(params)} pruned {lost} {unit} protected; they must never be pruned")

    def _mask(self, data: DataObject) -> None:
        module, values = self._module(data)
        original = module.weight
        shape = tuple(values.shape)
        params = self._params(data, values, _alive(module))
        seed = data.draw(_SEEDS, label="seed")
        self._prune(module, params, seed)
        mask = module._buffers.get("weight_mask")
        _expect(isinstance(mask, Tensor), "there is no weight_mask buffer after pruning")
        assert mask is not None
        _expect(module._parameters.get("weight_orig") is original, "weight_orig is not the original Parameter object")
        self._step(torch.ones(shape, dtype=torch.bool), mask, params, module, values)
        hooks = _pruning_hooks(module)
        _expect(
            len(hooks) == 1 and getattr(hooks[0], "_tensor_name", None) == "weight",
            f"expected one pruning hook acting on 'weight', found {hooks!r}",
        )
        # torch's protocol (what torch.nn.utils.prune and pruneplug.compat call): a float default mask.
        method = self.spec.create(**params)
        t = values.clone()
        torch.manual_seed(seed)
        try:
            raw = method.compute_mask(t, default_mask=torch.ones_like(t))  # type: ignore[no-untyped-call]
        except Exception as error:
            raise _Failure(
                "compute_mask(t, default_mask) with a float default mask, as torch.nn.utils.prune and "
                f"pruneplug.compat call it, raised {type(error).__name__}: {error}"
            ) from error
        _expect(isinstance(raw, Tensor), f"compute_mask(t, default_mask) returned {type(raw).__name__}, not a tensor")
        _expect(raw.shape == t.shape, f"compute_mask returned shape {tuple(raw.shape)} for a tensor of shape {shape}")
        _expect(
            not raw.is_complex() and bool(((raw == 0) | (raw == 1)).all()),
            "compute_mask returned values other than 0 and 1",
        )
        _expect(_same_bits(t, values), "compute_mask modified the tensor it was given")
        _expect(
            torch.equal(raw != 0, mask),
            "compute_mask with torch's float default mask disagrees with the native bool mask for the same seed",
        )

    def _count(self, data: DataObject) -> None:
        module, values = self._module(data)
        self._preprune(data, module)
        before = _alive(module)
        params = self._params(data, values, before)
        self._prune(module, params, data.draw(_SEEDS, label="seed"))
        self._step(before, _alive(module), params, module, values)

    def _iterative(self, data: DataObject) -> None:
        module, values = self._module(data)
        steps = data.draw(st.integers(2, 4), label="steps")
        for _ in range(steps):
            before = _alive(module)
            history = len(pruning_history(module, "weight"))
            params = self._params(data, values, before)
            self._prune(module, params, data.draw(_SEEDS, label="seed"))
            self._step(before, _alive(module), params, module, values)
            grown = len(pruning_history(module, "weight"))
            _expect(grown == history + 1, f"the pruning history went from {history} to {grown} methods; expected +1")

    def _rollback(self, data: DataObject) -> None:
        module, values = self._module(data)
        if data.draw(st.booleans(), label="pruned by the strategy before"):
            self._prune(module, self._params(data, values, _alive(module)), data.draw(_SEEDS, label="seed"))
        alive = _alive(module)
        params = self._params(data, values, alive)
        # (label, strategy, parameters, the error it must raise)
        attempts: list[tuple[str, StrategySpec, dict[str, Any], type[PruneplugError]]] = [
            ("an unknown parameter", self.spec, {**params, _UNKNOWN_PARAMETER: 1}, PruneplugError)
        ]
        attempts += [
            (f"invalid parameters {_show(bad)}", self.spec, {**params, **bad}, PruneplugError)
            for bad in self.invalid_params
        ]
        if self._counts:
            available = self._available(alive, params)
            attempts.append(
                (
                    f"amount={available + 1}, more than is left",
                    self.spec,
                    {**params, "amount": available + 1},
                    PruneplugError,
                )
            )
            kept = self._protected_alive(values, alive, params)
            if kept is not None and bool(kept.any()):
                over = available - int(kept.sum()) + 1
                for amount in (over, 1.0):
                    label = f"amount={amount!r}, more than may be pruned ({int(kept.sum())} protected)"
                    attempts.append((label, self.spec, {**params, "amount": amount}, InvalidAmountError))
        failing = _failing_spec(self.spec)
        if failing is not None:
            attempts.append(("an exception inside compute_mask", failing, params, PruneplugError))
        for label, spec, attempt, expected in attempts:
            before = _StateSnapshot.of(module)
            torch.manual_seed(0)
            try:
                prune(module, "weight", spec, **attempt)
            except expected:
                pass
            except Exception as error:
                raise _Failure(
                    f"a prune with {label} raised {type(error).__name__}, not a {expected.__name__}: {error}"
                ) from error
            else:
                raise _Failure(f"a prune with {label} ({_show(attempt)}) succeeded; it must be rejected")
            changed = before.differences(_StateSnapshot.of(module))
            _expect(not changed, f"a failed prune with {label} changed the module: {'; '.join(changed)}")

    def _determinism(self, data: DataObject) -> None:
        shape, dtype = self._shape_dtype(data)
        values = self._values(data, shape, dtype)
        first, second = _Holder(values.clone()), _Holder(values.clone())
        earlier = data.draw(st.one_of(st.none(), _SEEDS), label="earlier mask seed")
        if earlier is not None:
            keep = torch.rand(shape, generator=torch.Generator().manual_seed(earlier)) < 0.7
            for module in (first, second):
                prune(module, "weight", CustomFromMask, mask=keep)
        for _ in range(data.draw(st.integers(1, 2), label="steps")):
            params = self._params(data, values, _alive(first))
            seed = data.draw(_SEEDS, label="seed")
            self._prune(first, params, seed)
            self._prune(second, params, seed)
            _expect(
                torch.equal(_alive(first), _alive(second)),
                f"the same tensor, parameters {_show(params)} and torch.manual_seed({seed}) gave different masks",
            )

    def _remove(self, data: DataObject) -> None:
        module, values = self._module(data)
        self._preprune(data, module)
        for _ in range(data.draw(st.integers(1, 2), label="steps")):
            params = self._params(data, values, _alive(module))
            self._prune(module, params, data.draw(_SEEDS, label="seed"))
        effective = _weight(module).clone()
        orig = _orig(module)
        try:
            twin = copy.deepcopy(module)
        except Exception as error:
            raise _Failure(f"copy.deepcopy of the pruned module failed: {type(error).__name__}: {error}") from error
        _expect(_same_bits(_weight(twin), effective), "copy.deepcopy of the pruned module changed the tensor")

        remove(module, "weight")
        _expect(module._parameters.get("weight") is orig, "remove did not give back the original Parameter as weight")
        _expect(type(module) is _Holder, f"after pruneplug.remove, the module's class is {type(module)!r}")
        _removed_cleanly(module, effective, "pruneplug.remove")

        torch_prune.remove(twin, "weight")  # torch's own remove understands pruneplug's hooks
        _removed_cleanly(twin, effective, "torch.nn.utils.prune.remove on a deepcopy")

    def _global(self, data: DataObject) -> None:
        count = data.draw(st.integers(1, 3), label="tensors")
        # parameters drawn for a shape must fit every target: then all targets have that shape
        per_shape = callable(self.params) and not isinstance(self.params, (Mapping, SearchStrategy))
        modules: list[_Holder] = []
        originals: list[Tensor] = []
        for _ in range(count):
            shape = tuple(originals[0].shape) if per_shape and originals else None
            module, values = self._module(data, shape)
            self._preprune(data, module)
            modules.append(module)
            originals.append(values)
        before = [_alive(m) for m in modules]
        total = sum(int(a.sum()) for a in before)
        params = self._params(data, originals[0], before[0])
        kept = [self._protected_alive(values, alive, params) for values, alive in zip(originals, before)]
        protected = sum(int(k.sum()) for k in kept if k is not None)
        targets = [(m, "weight") for m in modules]
        seed = data.draw(_SEEDS, label="seed")
        if "amount" in self.spec.params_model.model_fields:
            params["amount"] = data.draw(amounts(total, total - protected), label="global amount")
            if protected:
                self._global_refuses(targets, params, total - protected + 1, seed)
        torch.manual_seed(seed)
        try:
            prune_global(targets, self.spec, **params)
        except Exception as error:
            raise _Failure(f"prune_global with {_show(params)} failed: {type(error).__name__}: {error}") from error
        for module, values, alive in zip(modules, originals, before):
            self._kept_protected(values, alive, _alive(module), params, "prune_global")
            after = _alive(module)
            stored = module._buffers.get("weight_mask")
            _expect(stored is not None and stored.dtype == torch.bool, "prune_global stored no bool weight_mask")
            _expect(not bool((after & ~alive).any()), "prune_global brought pruned entries back")
            orig = _orig(module)
            _expect(_same_bits(orig, values), "prune_global modified weight_orig")
            _expect(
                _same_bits(_weight(module), orig.detach() * after), "module.weight is not weight_orig * weight_mask"
            )
        if "amount" in params:
            pruned = sum(int((a & ~_alive(m)).sum()) for a, m in zip(before, modules))
            expected = _expected(params["amount"], total)
            _expect(
                pruned == expected,
                f"prune_global with amount={params['amount']!r} pruned {pruned} of {total} unpruned entries; "
                f"expected exactly {expected}",
            )

    def _global_refuses(
        self, targets: Sequence[tuple[nn.Module, str]], params: Mapping[str, Any], amount: int, seed: int
    ) -> None:
        """``prune_global`` with an ``amount`` over what may be pruned raises InvalidAmountError, changing nothing."""
        attempt = {**params, "amount": amount}
        before = [_StateSnapshot.of(module) for module, _ in targets]
        torch.manual_seed(seed)
        try:
            prune_global(targets, self.spec, **attempt)
        except InvalidAmountError:
            pass
        except Exception as error:
            raise _Failure(
                f"prune_global with {_show(attempt)}, more than may be pruned, raised {type(error).__name__}, "
                f"not an InvalidAmountError: {error}"
            ) from error
        else:
            raise _Failure(f"prune_global with {_show(attempt)}, more than may be pruned, succeeded")
        changed = [
            c for (module, _), snapshot in zip(targets, before) for c in snapshot.differences(_StateSnapshot.of(module))
        ]
        _expect(not changed, f"a failed prune_global with {_show(attempt)} changed a module: {'; '.join(changed)}")


def _show(params: Mapping[str, Any]) -> str:
    """Parameters for a message (tensors by shape and dtype, not by value)."""

    def one(value: Any) -> str:
        if isinstance(value, Tensor):
            return f"<tensor {tuple(value.shape)} {value.dtype}>"
        return repr(value)

    return "{" + ", ".join(f"{k}={one(v)}" for k, v in params.items()) + "}"


def check_strategy(
    strategy: StrategyLike,
    params: ParamsLike = None,
    *,
    checks: Iterable[str] | None = None,
    shapes: SearchStrategy[Shape] | None = None,
    dtypes: Sequence[torch.dtype] = (torch.float32,),
    invalid_params: Sequence[Mapping[str, Any]] = (),
    max_examples: int = DEFAULT_MAX_EXAMPLES,
    settings: Settings | None = None,
) -> ConformanceReport:
    """Run the conformance checks on a strategy; raise :class:`ConformanceError` listing every failure.

    Args:
        strategy: a registered name (looked up in the current registry, so an installed
            plugin's name works), a strategy class, or a :class:`pruneplug.StrategySpec`.
        params: the strategy's parameters: fixed values, hypothesis strategies, or a
            function of the tensor shape (see :data:`ParamsLike`). ``amount`` and, for
            structured strategies, ``dim`` are drawn when left out.
        checks: run only these (default: every check in :data:`CHECKS` that applies).
        shapes: a hypothesis strategy of tensor shapes (e.g. ones your strategy needs).
        dtypes: floating dtypes to try (e.g. ``(torch.float32, torch.float16)``).
        invalid_params: parameter sets that must be rejected, checked for rollback.
        max_examples: hypothesis examples per check (default
            :data:`DEFAULT_MAX_EXAMPLES`; raise it for a nightly run).
        settings: hypothesis settings to start from (default: the current profile).

    Returns:
        A :class:`ConformanceReport` of the checks that passed and those skipped (with why).

    >>> report = check_strategy("l1_unstructured", max_examples=5)
    >>> report.passed
    ('mask', 'count', 'iterative', 'rollback', 'determinism', 'remove', 'global')
    >>> report = check_strategy("ln_structured", {"n": 2}, checks=["count", "global"], max_examples=5)
    >>> print(report.skipped["global"])  # doctest: +NORMALIZE_WHITESPACE
    prune_global needs kind 'unstructured'; 'ln_structured' is of kind 'structured': it prunes whole slices
    of each tensor on its own, so it cannot rank entries across tensors
    """
    conformance = Conformance(
        strategy,
        params,
        shapes=shapes,
        dtypes=dtypes,
        invalid_params=invalid_params,
        max_examples=max_examples,
        settings=settings,
    )
    wanted = list(CHECKS) if checks is None else list(checks)
    for name in wanted:
        if name not in CHECKS:
            raise ValueError(f"unknown check {name!r}; the checks are {', '.join(CHECKS)}")
    passed: list[str] = []
    skipped: dict[str, str] = {}
    failures: dict[str, str] = {}
    for name in wanted:
        reason = conformance.skip_reason(name)
        if reason is not None:
            skipped[name] = reason
            continue
        try:
            conformance.check(name)
        except ConformanceError as error:
            failures.update(error.failures)
        else:
            passed.append(name)
    if failures:
        raise ConformanceError(conformance.spec.name, failures)
    return ConformanceReport(conformance.spec.name, tuple(passed), skipped)
