"""The conformance kit itself: it passes what conforms, and names the check that catches each kind of bug."""

from __future__ import annotations

import math
import re
import threading
import unittest
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import torch
from hypothesis import find, strategies as st
from hypothesis.errors import NoSuchExample
from pydantic import ConfigDict
from torch import Tensor

import pruneplug
from pruneplug.params import DimField
from pruneplug.selection.amount import count_to_prune
from pruneplug.storage.packed import plain
from pruneplug.testing import (
    CALIBRATION_CHECKS,
    CHECKS,
    Conformance,
    ConformanceError,
    ConformanceReport,
    StrategyConformance,
    amounts,
    check_strategy,
)
from pruneplug.testing._examples import row_amounts

FAST = 10  # examples per check: every bug below shows on the first few


@pytest.fixture(autouse=True)
def _builtins_only(registry: pruneplug.Registry) -> Iterator[None]:
    """Each test starts from a registry of built-ins only."""
    yield


class Keep(pruneplug.BasePruningMethod):
    """Keeps everything (base of the broken strategies below)."""

    PRUNING_TYPE: ClassVar[str] = "unstructured"
    name: ClassVar[str | None] = "keep"

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        return default_mask.clone()


def failures(strategy: Any, params: Any = None, **options: Any) -> dict[str, str]:
    """The failures check_strategy reports (``{}`` if it passes)."""
    try:
        check_strategy(strategy, params, max_examples=FAST, **options)
    except ConformanceError as error:
        assert error.strategy == Conformance(strategy).spec.name
        assert all(f"[{check}]" in str(error) for check in error.failures)
        return error.failures
    return {}


# --- what conforms passes -----------------------------------------------------------------------


def test_a_conforming_strategy_passes_and_the_report_says_what_ran() -> None:
    report = check_strategy(Keep, max_examples=FAST)
    assert isinstance(report, ConformanceReport)
    assert report.strategy == "keep"
    assert report.passed == ("mask", "iterative", "rollback", "determinism", "remove", "global")
    assert report.skipped == {"count": "the strategy has no 'amount' parameter"}
    assert str(report).startswith("keep: passed mask, iterative")


def test_checks_can_be_chosen_and_unknown_ones_are_refused() -> None:
    assert check_strategy("l1_unstructured", checks=["count"], max_examples=FAST).passed == ("count",)
    with pytest.raises(ValueError, match="unknown check 'speed'"):
        check_strategy("l1_unstructured", checks=["speed"])
    with pytest.raises(ValueError, match="does not apply"):
        Conformance("ln_structured", {"n": 1}).check("global")
    with pytest.raises(ValueError, match="floating dtypes"):
        Conformance("identity", dtypes=[torch.int64])


def test_amounts_cover_counts_fractions_and_both_ends() -> None:
    """What the kit draws for ``amount``: ints within what is left and fractions in [0, 1]."""
    from hypothesis import find

    assert find(amounts(7), lambda a: isinstance(a, int) and a == 7) == 7
    assert find(amounts(7), lambda a: isinstance(a, float) and a == 1.0) == 1.0
    assert find(amounts(0), lambda a: True) == 0


# --- each kind of bug is caught by the check that owns it ---------------------------------------


class BoolOnly(Keep):
    """Combines masks with ``&``: breaks on torch's float default masks (pruneplug.compat)."""

    name = "bool_only"

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        return default_mask & (t.abs() >= 0.5)


class Mutates(Keep):
    """Takes the absolute value of the tensor in place: it changes the weights it was meant to rank."""

    name = "mutates"

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        t.detach().abs_()
        return default_mask.clone()


class RoundsUp(pruneplug.UnstructuredStrategy):
    """Prunes ``ceil(amount * n)`` entries instead of Python's ``round``: one too many for some fractions."""

    name = "rounds_up"

    def scores(self, t: Tensor, alive: Tensor | None) -> Tensor:
        return t.abs()

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        count = self.amount if isinstance(self.amount, int) else math.ceil(self.amount * t.numel())
        keep = torch.ones(t.numel(), dtype=torch.bool)
        keep[torch.argsort(t.abs().flatten(), stable=True)[:count]] = False
        return default_mask * keep.reshape(t.shape).to(default_mask.dtype)


class ScatteredSlices(pruneplug.StructuredStrategy):
    """Prunes the right slices -- and one stray entry of a slice it keeps."""

    name = "scattered_slices"

    def slice_scores(self, t: Tensor, dim: int, alive: Tensor | None) -> Tensor:
        return torch.arange(t.shape[dim], dtype=torch.float32)

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        mask = super().compute_mask(t, default_mask).clone()
        mask.view(-1)[-1] = 0  # the last slice along any dim is the last to go: this entry is a stray
        return mask


class OffsetParams(pruneplug.StrategyParams):
    offset: int = 0


class Forgetful(Keep):
    """Masks every other entry from ``offset``, ignoring what earlier prunes removed."""

    PRUNING_TYPE = "global"
    name = "forgetful"
    Params = OffsetParams

    def __init__(self, offset: int = 0) -> None:
        self.offset = offset

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        mask = torch.ones_like(default_mask)
        mask.view(-1)[self.offset :: 2] = 0
        return mask


class Unseeded(Keep):
    """Draws from a generator seeded from the OS, not from torch's seeded stream."""

    name = "unseeded"

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        generator = torch.Generator()
        generator.seed()
        keep = torch.rand(t.shape, generator=generator) < 0.5
        return default_mask * keep.to(default_mask.dtype)


class LaxParams(pruneplug.StrategyParams):
    model_config = ConfigDict(extra="allow")


class Lax(Keep):
    """Its parameter model accepts names it does not know, so typos pass silently."""

    name = "lax"
    Params = LaxParams

    def __init__(self, **ignored: Any) -> None:
        pass


class HoldsALock(Keep):
    """Keeps a lock on the hook: a pruned model can no longer be deep-copied or saved."""

    name = "holds_a_lock"

    def __init__(self) -> None:
        self.lock = threading.Lock()


class RowsOnly(Keep):
    """An unstructured strategy that assumes 2-D tensors (it breaks on the flat view global pruning uses)."""

    name = "rows_only"

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        mask = default_mask.clone()
        mask[:, 0] = 0
        return mask


@pytest.mark.parametrize(
    ("strategy", "params", "check", "message"),
    [
        (BoolOnly, None, "mask", "with a float default mask, as torch.nn.utils.prune and pruneplug.compat call it"),
        (Mutates, None, "mask", "weight_orig does not hold the original values"),
        (Mutates, None, "rollback", "a failed prune with an exception inside compute_mask changed the module"),
        (RoundsUp, None, "count", "unpruned entries; expected exactly"),
        (ScatteredSlices, None, "count", "without pruning their whole slice"),
        (Forgetful, {"offset": st.sampled_from([0, 1])}, "iterative", "would un-prune"),
        (Unseeded, None, "determinism", "gave different masks"),
        (Lax, None, "rollback", "a prune with an unknown parameter"),
        (HoldsALock, None, "remove", "copy.deepcopy of the pruned module failed"),
        (RowsOnly, None, "global", "prune_global with {} failed"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else None,
)
def test_each_bug_is_caught_by_its_check(strategy: type, params: Any, check: str, message: str) -> None:
    """A strategy with one bug fails the check responsible for it, with a message that says what went wrong."""
    found = failures(
        strategy, params, checks=[check], shapes=st.lists(st.integers(2, 5), min_size=2, max_size=3).map(tuple)
    )
    assert check in found, f"{check} did not catch {strategy.__name__}"
    assert message in found[check], found[check]


def test_a_rollback_failure_says_what_changed_line_by_line() -> None:
    """The rollback check compares whole snapshots (pruneplug.testing.snapshot) and quotes their diff."""
    found = failures(
        Mutates, checks=["rollback"], shapes=st.lists(st.integers(2, 5), min_size=2, max_size=3).map(tuple)
    )
    message = found["rollback"].splitlines()[0]
    assert re.search(r"changed the module: weight(_orig)?: values differ at \d+ entr(y|ies) \(first at \(", message), (
        message
    )


def test_invalid_params_must_be_rejected() -> None:
    """A parameter set named invalid that the strategy accepts is a rollback failure."""
    found = failures("l1_unstructured", checks=["rollback"], invalid_params=[{"amount": 0.5}])
    assert "a prune with invalid parameters {amount=0.5}" in found["rollback"] and "succeeded" in found["rollback"]


def test_a_failure_names_the_falsifying_example() -> None:
    found = failures(BoolOnly, checks=["mask"])
    assert "Draw 1 (shape)" in found["mask"]


# --- the pytest form -----------------------------------------------------------------------------


class _ConformsAsClass(StrategyConformance):
    strategy = Keep
    max_examples = FAST


class _BrokenAsClass(StrategyConformance):
    strategy = BoolOnly
    max_examples = FAST


def test_subclasses_run_one_test_per_check_and_skip_what_does_not_apply() -> None:
    """A subclass's test methods pass, skip with the reason, or fail with ConformanceError."""
    names = sorted(n for n in dir(StrategyConformance) if n.startswith("test_"))
    assert names == sorted(f"test_{check}" for check in (*CHECKS, *CALIBRATION_CHECKS))
    suite = _ConformsAsClass()
    suite.test_mask()
    suite.test_global()
    with pytest.raises(pytest.skip.Exception, match="count: the strategy has no 'amount' parameter"):
        suite.test_count()
    with pytest.raises(ConformanceError, match=r"\[mask\]"):
        _BrokenAsClass().test_mask()


def test_params_may_be_a_plain_function_of_the_shape() -> None:
    """A function assigned as ``params`` is called with the shape (never bound to the instance)."""
    seen: list[tuple[int, ...]] = []

    def params(shape: tuple[int, ...]) -> dict[str, Any]:
        seen.append(shape)
        return {"mask": torch.ones(shape, dtype=torch.bool)}

    class _Masks(StrategyConformance):
        strategy = "custom_from_mask"
        max_examples = 3

    _Masks.params = params  # type: ignore[assignment]
    _Masks().test_mask()
    assert seen and all(isinstance(s, tuple) for s in seen)


def test_a_subclass_without_a_strategy_says_so() -> None:
    class _Nothing(StrategyConformance):
        pass

    with pytest.raises(TypeError, match="must set the class attribute 'strategy'"):
        _Nothing().test_mask()


def test_skips_without_pytest_are_unittest_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside pytest (unittest, a script) a check that does not apply raises unittest.SkipTest."""
    import sys

    monkeypatch.delitem(sys.modules, "pytest")
    with pytest.raises(unittest.SkipTest, match="count"):
        _ConformsAsClass().test_count()


class WidthParams(pruneplug.strategies.AmountParams):
    width: int


class FitsOneWidth(pruneplug.UnstructuredStrategy):
    """Takes a parameter that must match the tensor's last dim (like a per-column vector would)."""

    name = "fits_one_width"
    Params = WidthParams

    def __init__(self, amount: int | float, width: int) -> None:
        super().__init__(amount)
        self.width = width

    def scores(self, t: Tensor, alive: Tensor | None) -> Tensor:
        if t.shape[-1] != self.width:
            raise pruneplug.InvalidParametersError(f"width={self.width} but the last dim is {t.shape[-1]}")
        return t.abs()


def test_parameters_drawn_per_shape_fit_every_target_of_the_global_check() -> None:
    """prune_global gets one set of parameters: the kit prunes targets of the shape they were drawn for."""
    report = check_strategy(FitsOneWidth, lambda shape: {"width": shape[-1]}, checks=["global"], max_examples=30)
    assert report.passed == ("global",)


# --- strategies that count per row (pruneplug.CountsPerRow) ----------------------------------------
# A conforming one -- the smallest |w| of every row along a dim, on tensors of any shape -- passes every
# check, its counts checked row by row; each broken variant fails the checks that count, naming the row.


class RowParams(pruneplug.strategies.AmountParams):
    dim: DimField = -1


class RowMagnitude(pruneplug.UnstructuredStrategy):
    """Prunes ``amount`` of the unpruned entries of every row along ``dim``, the smallest ``|w|`` first."""

    name = "row_magnitude"
    Params = RowParams

    def __init__(self, amount: int | float, dim: int = -1) -> None:
        super().__init__(amount)
        self.dim = dim

    def scores(self, t: Tensor, alive: Tensor | None) -> Tensor:
        return t.abs()

    def row_dim(self, t: Tensor) -> int | None:
        return self.dim

    def keep_entries(self, t: Tensor, alive: Tensor | None) -> Tensor:
        """Row by row, written out: the rows of ``t`` along ``dim``, each pruning its own count."""
        live = torch.ones(t.shape, dtype=torch.bool) if alive is None else plain(alive)
        scores = self.scores(t.detach(), None).movedim(self.dim, -1)
        keep = live.movedim(self.dim, -1).clone()
        flat_scores, flat_keep = scores.reshape(-1, scores.shape[-1]), keep.reshape(-1, keep.shape[-1])
        for row in range(flat_keep.shape[0]):
            unpruned = flat_keep[row].nonzero().flatten()
            count = count_to_prune(self.amount, len(unpruned))
            order = torch.sort(flat_scores[row, unpruned], stable=True).indices
            flat_keep[row, unpruned[order[:count]]] = False
        return flat_keep.reshape(keep.shape).movedim(-1, self.dim)

    def global_refusal(self) -> str | None:
        return "it ranks the entries of each row on its own"


def test_a_conforming_per_row_strategy_passes_every_check_counted_per_row() -> None:
    report = check_strategy(RowMagnitude, max_examples=FAST)
    assert report.passed == tuple(c for c in CHECKS if c != "global")
    assert Conformance(RowMagnitude)._checks.per_row


def test_the_rows_may_run_along_any_dim() -> None:
    three_d = st.lists(st.integers(1, 4), min_size=3, max_size=3).map(tuple)
    counting = ["mask", "count", "iterative", "rollback"]  # (a drawn dim: the kit cannot know global is refused)
    report = check_strategy(
        RowMagnitude, {"dim": st.sampled_from([0, 1, -2])}, checks=counting, shapes=three_d, max_examples=FAST
    )
    assert report.passed == tuple(counting)


class CountsTensor(RowMagnitude):
    """Declares rows but ranks over the whole tensor (the base class's selection)."""

    name = "counts_tensor"

    def keep_entries(self, t: Tensor, alive: Tensor | None) -> Tensor:
        return pruneplug.UnstructuredStrategy.keep_entries(self, t, alive)


class DeclaresNothing(RowMagnitude):
    """Counts per row but says it counts over the tensor."""

    name = "declares_nothing"

    def row_dim(self, t: Tensor) -> int | None:
        return None


class DeclaresAnotherDim(RowMagnitude):
    """Counts along ``dim`` but declares the rows along the first dim."""

    name = "declares_another_dim"

    def row_dim(self, t: Tensor) -> int | None:
        return 0


TWO_D = st.tuples(st.integers(2, 5), st.integers(2, 5))


def test_a_strategy_declaring_rows_but_counting_over_the_tensor_fails_the_counting_checks() -> None:
    found = failures(CountsTensor, shapes=TWO_D, checks=["count", "iterative", "mask"])
    assert set(found) == {"count", "iterative", "mask"}
    assert "unpruned entries of row" in found["count"] and "as row_dim(t) declares" in found["count"]


@pytest.mark.parametrize("strategy", [DeclaresNothing, DeclaresAnotherDim])
def test_a_strategy_declaring_the_wrong_rows_fails_count(strategy: type[RowMagnitude]) -> None:
    assert "count" in failures(strategy, shapes=TWO_D, checks=["count"])


class BadDim(RowMagnitude):
    name = "bad_dim"

    def row_dim(self, t: Tensor) -> int | None:
        return t.dim()


def test_a_row_dim_that_is_not_a_dim_of_the_tensor_is_named() -> None:
    message = failures(BadDim, checks=["count"])["count"]
    assert "row_dim(t) returned" in message and "it must be a dim of the tensor" in message


class ProtectsFirstColumn(RowMagnitude):
    """Per row along the last dim, never pruning an entry of the first column (its rows start there)."""

    name = "protects_first_column"

    def protected(self, t: Tensor) -> Tensor | None:
        guard = torch.zeros(t.shape, dtype=torch.bool)
        guard[..., 0] = True
        return guard

    def keep_entries(self, t: Tensor, alive: Tensor | None) -> Tensor:
        live = torch.ones(t.shape, dtype=torch.bool) if alive is None else plain(alive)
        guard = self.protected(t)
        assert guard is not None
        rows, guards = live.reshape(-1, t.shape[-1]), guard.reshape(-1, t.shape[-1])
        keep = rows.clone()
        values = t.detach().abs().reshape(-1, t.shape[-1])
        for row in range(rows.shape[0]):
            count = count_to_prune(
                self.amount,
                int(rows[row].sum()),
                protected=int((rows[row] & guards[row]).sum()),
                strategy=self.name,
            )
            candidates = (rows[row] & ~guards[row]).nonzero().flatten()
            order = torch.sort(values[row, candidates], stable=True).indices
            keep[row, candidates[order[:count]]] = False
        return keep.reshape(t.shape)


def test_amounts_are_drawn_within_what_every_row_may_prune() -> None:
    """With protected entries in each row, drawn amounts fit every row (else the counting checks would fail)."""
    report = check_strategy(ProtectsFirstColumn, shapes=TWO_D, max_examples=FAST)
    assert {"count", "iterative", "rollback"} <= set(report.passed)


def test_row_amounts_fit_the_row_with_the_least_room() -> None:
    assert find(row_amounts([5, 3, 4], [5, 3, 4]), lambda a: isinstance(a, int) and a >= 3) == 3
    assert find(row_amounts([5, 3, 4], [5, 3, 4]), lambda a: a == 1.0) == 1.0
    fits = row_amounts([4, 4], [4, 2])  # row 1 may lose 2 of its 4: at most half
    assert find(fits, lambda a: isinstance(a, int) and a >= 2) == 2
    assert 0.4 < find(fits, lambda a: isinstance(a, float) and a > 0.4) <= 0.5
    with pytest.raises(NoSuchExample):
        find(fits, lambda a: isinstance(a, float) and a > 0.5)
