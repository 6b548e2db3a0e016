"""Running the checks: :class:`Conformance` for one strategy, :func:`check_strategy` for a report of all.

Each check runs as a hypothesis test of its own, under settings made for the
kit (no deadline, no explain phase), with its own database key, and with
torch's global RNG forked so the caller's random stream is left as it was.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from hypothesis import HealthCheck, Phase, given, settings as Settings, strategies as st
from hypothesis.strategies import DataObject, SearchStrategy

from ..errors import cross_tensor_hint
from ..registry import StrategySpec
from ..statistics.spec import NeedsStatistics
from ..strategies import UnstructuredStrategy
from ._assertions import Failure
from ._calibrated_checks import CalibratedChecks
from ._examples import resolve
from ._hypothesis_private import set_database_key
from ._types import (
    CALIBRATION_CHECKS,
    CHECKS,
    DEFAULT_MAX_EXAMPLES,
    ConformanceError,
    ConformanceReport,
    ParamsLike,
    Shape,
    StrategyLike,
)

__all__ = ["Conformance", "check_strategy"]

_ALL_CHECKS = CHECKS + CALIBRATION_CHECKS


def _describe(error: BaseException) -> str:
    """What a failed check says: the failure's message and hypothesis's notes (its falsifying example).

    Hypothesis raises a group when it finds several distinct failures: each is described, numbered.
    """
    group = getattr(error, "exceptions", None)
    if isinstance(group, tuple) and group:
        return "\n".join(f"({number}) {_describe(part)}" for number, part in enumerate(group, 1))
    message = str(error) if isinstance(error, Failure) else f"{type(error).__name__}: {error}"
    notes = [n for n in getattr(error, "__notes__", ()) if isinstance(n, str)]
    return "\n".join([message, *notes])


def _default_shapes(spec: StrategySpec) -> SearchStrategy[Shape]:
    """1 to 3 dims of 1 to 5 (2 or 3 dims if structured); a linear layer's weight if the strategy is calibrated."""
    if issubclass(spec.strategy_class, NeedsStatistics):  # checked on nn.Linear layers
        return st.tuples(st.integers(1, 5), st.integers(1, 6))
    min_dims = 2 if spec.kind == "structured" else 1
    return st.lists(st.integers(1, 5), min_size=min_dims, max_size=3).map(tuple)


class Conformance:
    """The conformance checks of one strategy, configured once and run one by one.

    :func:`check_strategy` and :class:`~pruneplug.testing.StrategyConformance` are
    built on it; use it directly to run single checks (``Conformance("nm").check("mask")``).

    Args:
        strategy: a registered name, a strategy class or a :class:`pruneplug.StrategySpec`.
        params: the strategy's parameters (see :data:`ParamsLike`).
        shapes: the tensor shapes to try (default: 1 to 3 dims of size 1 to 5; at least 2
            dims for structured strategies; ``(out_features, in_features)`` of 1 to 5 and
            1 to 6 for a strategy that reads calibration statistics, which is checked on
            ``nn.Linear`` layers).
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
        self.spec = resolve(strategy)
        self.params = params
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
        self.shapes = shapes if shapes is not None else _default_shapes(self.spec)
        self._checks = CalibratedChecks(self.spec, params, self.shapes, self.dtypes, self.invalid_params)

    def skip_reason(self, check: str) -> str | None:
        """Why ``check`` does not apply to this strategy, or ``None`` if it does."""
        if check not in _ALL_CHECKS:
            raise ValueError(f"unknown check {check!r}; the checks are {', '.join(_ALL_CHECKS)}")
        if check == "calibration" and not self._checks.calibrated:
            return "the strategy reads no calibration statistics (it does not implement pruneplug.NeedsStatistics)"
        if check == "updates" and not self._checks.updates:
            return "the strategy does not change the values it keeps (it does not implement pruneplug.UpdatesValues)"
        if check == "count" and not self._checks.counts:
            if "amount" not in self.spec.params_model.model_fields:
                return "the strategy has no 'amount' parameter"
            return f"kind {self.spec.kind!r} has no counting rule (only unstructured and structured do)"
        if check == "count" and isinstance(self.params, Mapping) and self.params.get("amount", 0) is None:
            return "the parameters give amount=None: there is no amount to count"
        if check == "global" and self.spec.kind != "unstructured":
            return f"prune_global needs kind 'unstructured'; {cross_tensor_hint(self.spec.name, self.spec.kind)}"
        if check == "global":
            refusal = self._global_refusal()
            if refusal is not None:
                return f"prune_global refuses these parameters: {refusal}"
        return None

    def _global_refusal(self) -> str | None:
        """What ``global_refusal()`` says of the strategy made with the fixed parameters, if they are fixed.

        Parameters drawn (a hypothesis strategy, or a function of the shape) may vary: then ``None``,
        and the ``global`` check runs. A drawn ``amount`` does not count: it never makes a refusal.
        No parameters (``None``) are the defaults, fixed.
        """
        params = {} if self.params is None else self.params
        if not isinstance(params, Mapping):
            return None
        if any(isinstance(v, SearchStrategy) for k, v in params.items() if k != "amount"):
            return None
        fixed = {k: v for k, v in params.items() if not isinstance(v, SearchStrategy)}
        if "amount" in self.spec.params_model.model_fields and "amount" not in fixed:
            fixed["amount"] = 0
        try:
            method = self.spec.create(**fixed)
        except Exception:  # (invalid parameters: the checks report them)
            return None
        return method.global_refusal() if isinstance(method, UnstructuredStrategy) else None

    def check(self, name: str) -> None:
        """Run one check; raise :class:`ConformanceError` if the strategy fails it.

        Raises ``ValueError`` for an unknown check and for one that does not apply
        (see :meth:`skip_reason`).
        """
        reason = self.skip_reason(name)
        if reason is not None:
            raise ValueError(f"check {name!r} does not apply to {self.spec.name!r}: {reason}")
        body = self._checks.body(name)

        @self.settings
        @given(data=st.data())
        def run(data: DataObject) -> None:
            body(data)

        # One database entry (and one derandomized seed) per strategy and check, not one for all.
        cls = self.spec.strategy_class
        set_database_key(run, f"pruneplug.testing:{cls.__module__}.{cls.__qualname__}:{self.spec.name}:{name}")
        try:
            with torch.random.fork_rng(devices=[]):  # the checks seed torch's RNG; the caller's stream is kept
                run()
        except Exception as error:
            raise ConformanceError(self.spec.name, {name: _describe(error)}) from error


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
        checks: run only these (default: every check in :data:`CHECKS` that applies, then
            those of :data:`CALIBRATION_CHECKS` that apply).
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
    if checks is None:
        wanted = [*CHECKS, *(name for name in CALIBRATION_CHECKS if conformance.skip_reason(name) is None)]
    else:
        wanted = list(checks)
    for name in wanted:
        if name not in _ALL_CHECKS:
            raise ValueError(f"unknown check {name!r}; the checks are {', '.join(_ALL_CHECKS)}")
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
