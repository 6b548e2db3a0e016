"""The kit's vocabulary: which checks there are, what they take, and what they report.

:data:`CHECKS` names the checks and says what each one checks;
:data:`StrategyLike` and :data:`ParamsLike` are what a strategy and its
parameters may be given as; :class:`ConformanceReport` and
:class:`ConformanceError` are what a run gives back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from hypothesis.strategies import SearchStrategy

from ..registry import StrategySpec

__all__ = [
    "CHECKS",
    "DEFAULT_MAX_EXAMPLES",
    "ConformanceError",
    "ConformanceReport",
    "ParamsLike",
    "ParamsSource",
    "Shape",
    "StrategyLike",
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
