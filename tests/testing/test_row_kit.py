"""The conformance kit on strategies whose ``amount`` counts per row (they implement ``pruneplug.CountsPerRow``).

A small conforming strategy written here -- the smallest ``|w|`` of every row
along a dim, on tensors of any shape -- passes every check, its counts
checked row by row; each broken variant fails the checks that count, with a
message naming the row.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from hypothesis import find, strategies as st
from hypothesis.errors import NoSuchExample
from torch import Tensor

import pruneplug
from pruneplug.params import DimField
from pruneplug.selection.amount import count_to_prune
from pruneplug.storage.packed import plain
from pruneplug.strategies import AmountParams
from pruneplug.testing import CHECKS, Conformance, ConformanceError, check_strategy
from pruneplug.testing._examples import row_amounts

FAST = 15  # examples per check: every bug below shows on the first few


@pytest.fixture(autouse=True)
def _builtins_only(registry: pruneplug.Registry) -> Iterator[None]:
    """Each test starts from a registry of built-ins only."""
    yield


def failures(strategy: Any, params: Any = None, **options: Any) -> dict[str, str]:
    """The failures check_strategy reports (``{}`` if it passes)."""
    try:
        check_strategy(strategy, params, max_examples=FAST, **options)
    except ConformanceError as error:
        return error.failures
    return {}


class RowParams(AmountParams):
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
