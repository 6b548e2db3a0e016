"""N:M groups and per-row selection (``pruneplug.selection.groups``) against a plain-Python reference.

The reference ranks the alive entries of one group or row by
``(NaN first, higher value first, earlier position first)`` and keeps the
first ``k``; the counts per row come from torch's rules written out here
(an int is a count, a float is rounded half to even).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, strategies as st
from torch import Tensor

from pruneplug import InvalidAmountError, InvalidDimError, InvalidParametersError, PackedMask
from pruneplug.selection.groups import keep_highest_per_row, keep_n_of_m

VALUES = st.one_of(st.sampled_from([0.0, 1.0, 2.0, -1.0, math.nan, math.inf, -math.inf]), st.floats(-4, 4, width=32))


def keep_first(values: list[float], alive: list[bool], k: int) -> list[bool]:
    """Keep the ``k`` best alive entries of one row: NaN best, then higher, then earlier."""
    order = sorted(
        (i for i in range(len(values)) if alive[i]),
        key=lambda i: (not math.isnan(values[i]), -values[i] if not math.isnan(values[i]) else 0.0, i),
    )
    kept = set(order[:k])
    return [i in kept for i in range(len(values))]


def pruned_in_row(amount: int | float, alive: int) -> int:
    return amount if isinstance(amount, int) else round(amount * alive)


@st.composite
def scored(draw: st.DrawFn, columns: st.SearchStrategy[int]) -> tuple[Tensor, Tensor]:
    rows = draw(st.integers(1, 5))
    cols = draw(columns)
    values = draw(st.lists(VALUES, min_size=rows * cols, max_size=rows * cols))
    alive = draw(st.lists(st.booleans(), min_size=rows * cols, max_size=rows * cols))
    return torch.tensor(values).reshape(rows, cols), torch.tensor(alive).reshape(rows, cols)


@st.composite
def n_of_m_case(draw: st.DrawFn) -> tuple[Tensor, Tensor, int, int]:
    of_m = draw(st.sampled_from([2, 3, 4, 8]))
    keep_n = draw(st.integers(1, of_m - 1))
    scores, alive = draw(scored(st.integers(1, 3).map(lambda g: g * of_m)))
    return scores, alive, keep_n, of_m


@given(n_of_m_case(), st.booleans())
def test_n_of_m_keeps_the_best_alive_entries_of_every_group(
    case: tuple[Tensor, Tensor, int, int], all_alive: bool
) -> None:
    scores, alive, keep_n, of_m = case
    if all_alive:
        alive = torch.ones_like(alive)
    keep = keep_n_of_m(scores, keep_n, of_m, None if all_alive else alive)
    assert keep.dtype == torch.bool and keep.shape == scores.shape
    assert not bool((keep & ~alive).any())  # never keeps what was pruned
    groups, live = keep.reshape(-1, of_m), alive.reshape(-1, of_m)
    assert torch.equal(groups.sum(1), live.sum(1).clamp(max=keep_n))  # valid N:M, exact
    flat_scores = scores.reshape(-1, of_m).tolist()
    for row, (values, alive_row) in enumerate(zip(flat_scores, live.tolist())):
        assert groups[row].tolist() == keep_first(values, alive_row, keep_n)


@given(n_of_m_case())
def test_n_of_m_along_dim_0_is_the_transpose(case: tuple[Tensor, Tensor, int, int]) -> None:
    scores, alive, keep_n, of_m = case
    along_0 = keep_n_of_m(scores.t().contiguous(), keep_n, of_m, alive.t().contiguous(), dim=0)
    assert torch.equal(along_0, keep_n_of_m(scores, keep_n, of_m, alive).t())


AMOUNTS = st.one_of(st.floats(0.0, 1.0), st.integers(0, 3))


@given(scored(st.integers(1, 9)), AMOUNTS)
def test_per_row_selection_prunes_the_exact_count_of_every_row(case: tuple[Tensor, Tensor], amount: float) -> None:
    scores, alive = case
    if isinstance(amount, int) and amount > int(alive.sum(1).min()):
        with pytest.raises(InvalidAmountError, match="entries of a row along dim 1"):
            keep_highest_per_row(scores, amount, alive)
        return
    keep = keep_highest_per_row(scores, amount, alive)
    assert not bool((keep & ~alive).any())
    for values, alive_row, kept in zip(scores.tolist(), alive.tolist(), keep.tolist()):
        left = sum(alive_row) - pruned_in_row(amount, sum(alive_row))
        assert kept == keep_first(values, alive_row, left)


@given(scored(st.integers(1, 9)), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_pruning_rows_again_only_loses_entries(case: tuple[Tensor, Tensor], first: float, second: float) -> None:
    scores, _ = case
    once = keep_highest_per_row(scores, first)
    twice = keep_highest_per_row(scores, second, once)
    assert not bool((twice & ~once).any())
    alive_per_row = once.sum(1).tolist()
    assert twice.sum(1).tolist() == [n - round(second * n) for n in alive_per_row]


def test_a_packed_alive_mask_reads_like_the_plain_one() -> None:
    scores = torch.randn(6, 16)
    alive = torch.rand(6, 16) > 0.3
    packed = PackedMask.pack(alive)
    assert torch.equal(keep_highest_per_row(scores, 0.5, packed), keep_highest_per_row(scores, 0.5, alive))
    assert torch.equal(keep_n_of_m(scores, 2, 4, packed), keep_n_of_m(scores, 2, 4, alive))


def test_rows_along_dim_0_of_a_3d_tensor() -> None:
    scores = torch.arange(24.0).reshape(4, 3, 2)
    keep = keep_highest_per_row(scores, 0.5, dim=0)  # each (j, k) fibre of 4 keeps its 2 highest: the last two
    assert torch.equal(keep, torch.tensor([False, False, True, True]).reshape(4, 1, 1).expand(4, 3, 2))


def test_errors_name_what_is_wrong() -> None:
    with pytest.raises(InvalidParametersError, match="of_m=4 does not divide the 6 entries along dim 1"):
        keep_n_of_m(torch.ones(2, 6), 2, 4)
    with pytest.raises(InvalidParametersError, match=r"keep_n=4, of_m=4: .*1 <= keep_n < of_m"):
        keep_n_of_m(torch.ones(2, 8), 4, 4)
    with pytest.raises(InvalidDimError, match="dim=2 is out of range"):
        keep_highest_per_row(torch.ones(2, 8), 0.5, dim=2)
    with pytest.raises(InvalidAmountError, match="amount=3 is larger than the 2 unpruned entries of a row"):
        keep_highest_per_row(torch.ones(2, 4), 3, torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]]).bool())
