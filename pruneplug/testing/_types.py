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
    "CALIBRATION_CHECKS",
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
draws within what is still unpruned and not protected, at every step (in every row, for a
strategy that counts ``amount`` per row: :class:`pruneplug.CountsPerRow`). Give
``"amount": None`` to check a strategy whose amount is optional without one (in its N:M
mode, say): ``count`` is then skipped.
"""

CHECKS: tuple[str, ...] = ("mask", "count", "iterative", "rollback", "determinism", "remove", "global")
"""Every check, in the order :func:`check_strategy` runs them.

``mask``
    The stored mask is ``torch.bool`` of the tensor's shape and on its device, ``weight`` is exactly
    ``weight_orig * weight_mask``, ``weight_orig`` is the original parameter with its
    values untouched, and ``compute_mask(t, default_mask)`` called the torch way (float
    mask) returns 0/1 values agreeing with the native mask.
``count``
    Strategies of kind ``unstructured`` / ``structured`` with an ``amount`` prune exactly
    ``amount`` of the still-unpruned entries / slices (an int is a count, a float a
    fraction rounded with Python's ``round``), structured ones whole slices only --
    starting from arbitrary earlier pruning -- and never an entry or slice the strategy
    protects (this last part applies to every check that prunes). An unstructured
    strategy implementing :class:`pruneplug.CountsPerRow` whose ``row_dim(t)`` names a
    dim is counted row by row instead: each 1-D slice along that dim prunes exactly
    ``amount`` of its *own* still-unpruned entries (an int in every row, a fraction of
    each row's count, rounded the same way), in this check and in every other that
    prunes (``mask``, ``iterative``); ``rollback`` then tries an ``amount`` one more
    than the row with the fewest unpruned entries holds.
``iterative``
    Pruning again and again: masks only lose ones, the history grows by one each time,
    ``weight_orig`` is never modified, and each step prunes exactly ``amount`` of what is
    left (of what is left in each row, for a strategy that counts per row).
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
    Skipped for fixed parameters with which the strategy's ``global_refusal()`` refuses
    (``wanda``'s ``compare="row"``, N:M).

A strategy that reads calibration statistics (implements
:class:`pruneplug.NeedsStatistics`) is checked on ``nn.Linear`` layers (2-D
weights, ``(out_features, in_features)``), each with random calibration inputs of
its own; every prune runs inside :func:`pruneplug.using_statistics` with the
statistics ``required_statistics()`` names, made from those inputs by the
registry's :class:`pruneplug.Statistic` as :func:`pruneplug.prune_calibrated`
makes them. It then also gets the :data:`CALIBRATION_CHECKS`. A strategy that
updates the values it keeps (implements :class:`pruneplug.UpdatesValues`) keeps
``weight_orig`` the same ``Parameter`` but not its values; the ``updates`` check
says which values it must hold.
"""

CALIBRATION_CHECKS: tuple[str, ...] = ("calibration", "updates")
"""The checks of data-aware strategies, run after :data:`CHECKS` for a strategy they apply to.

:func:`~pruneplug.testing.check_strategy` runs each by default only for a strategy that
implements what it checks (so a plain strategy's report is as it was); name one in
``checks`` and it is reported as skipped, with why, where it does not apply.

``calibration``
    For a strategy implementing :class:`pruneplug.NeedsStatistics` (from any earlier
    pruning, its own included): a prune with no statistics in use, with statistics
    of another layer only, or without one of those it requires raises
    :class:`pruneplug.CalibrationRequiredError`; one with a statistic of the wrong
    shape (that of a layer of another width) raises a
    :class:`pruneplug.CalibrationError` that is not a ``CalibrationRequiredError``;
    each leaves the module exactly as it was. :func:`pruneplug.compute_mask` on a
    bare tensor (no layer, so no statistics of its own) raises
    ``CalibrationRequiredError``. (A prune whose result cannot depend on the
    statistics -- one that prunes nothing, ``amount=0``, or everything still unpruned
    -- may succeed instead, leaving the values as they were.) Parameters for which
    ``required_statistics()`` is empty must prune with no statistics in use.
``updates``
    For a strategy implementing :class:`pruneplug.UpdatesValues`: ``prune_and_update``
    leaves the tensor it is given as it is and returns a mask equal to the one
    :func:`pruneplug.compute_mask` gives for the same tensor, parameters, statistics
    and seed; after a prune ``weight_orig`` is the same ``Parameter`` holding exactly
    the values it returned and ``weight`` is ``weight_orig * weight_mask``; a prune
    failing after ``prune_and_update`` ran leaves the old values (and everything
    else); after :func:`pruneplug.remove` the pruned entries are zero and the kept
    ones the updated values.
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
