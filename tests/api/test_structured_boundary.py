"""One process's choice of slices from combined norms: the bounds hold one process's norms, the choice is its choice."""

from __future__ import annotations

import pytest
import torch

from pruneplug.api.structured_boundary import norm_bounds, settle_lowest_slices
from pruneplug.selection.exact import select_lowest_slices

ORDERS = [1.0, 2.0, 3.0, 0.5, -1.0]


def slices(seed: int, dtype: torch.dtype) -> torch.Tensor:
    """12 slices of 50 entries: random ones, and copies of slice 0 permuted (norms equal up to rounding)."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randn(12, 50, generator=generator, dtype=torch.float64)
    for row in (3, 7, 10):
        rows[row] = rows[0][torch.randperm(50, generator=generator)]
    return rows.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("order", ORDERS)
def test_bounds_hold_one_process_norm(dtype: torch.dtype, order: float) -> None:
    for seed in range(5):
        rows = slices(seed, dtype)
        sums = rows.abs().to(torch.float64).pow(order).sum(dim=1)
        low, high = norm_bounds(sums, order, 50, dtype)
        norms = torch.norm(rows, p=order, dim=1).to(torch.float64)
        assert bool(((low <= norms) & (norms <= high)).all()), (seed, low, norms, high)
    wide = torch.randn(4, 8192, generator=torch.Generator().manual_seed(0), dtype=dtype)
    sums = wide.abs().to(torch.float64).pow(order).sum(dim=1)
    low, high = norm_bounds(sums, order, 8192, dtype)
    norms = torch.norm(wide, p=order, dim=1).to(torch.float64)
    assert bool(((low <= norms) & (norms <= high)).all()), (low, norms, high)
    if order >= 1:  # (the others overflow or underflow a float16 norm of 8,192 entries)
        assert bool((high - low < 0.05 * norms).all())  # (narrow enough that long rows are not all in doubt)


@pytest.mark.parametrize("order", ORDERS)
def test_settled_choice_is_one_process_choice(order: float) -> None:
    doubted = 0
    for seed in range(8):
        rows = slices(seed, torch.float32)
        norms = torch.norm(rows, p=order, dim=1)
        sums = rows.abs().to(torch.float64).pow(order).sum(dim=1)
        low, high = norm_bounds(sums, order, 50, torch.float32)
        alive = torch.ones(12, dtype=torch.bool)
        alive[5] = False
        for count in range(12):
            calls: list[torch.Tensor] = []

            def exact(
                indices: torch.Tensor, calls: list[torch.Tensor] = calls, rows: torch.Tensor = rows
            ) -> torch.Tensor:
                calls.append(indices)
                return torch.norm(rows[indices], p=order, dim=1)

            settled, indices = settle_lowest_slices(sums.pow(1.0 / order), low, high, count, alive, exact)
            assert torch.equal(settled, select_lowest_slices(norms, count, alive)), (seed, count)
            assert len(calls) <= 1
            doubted += int(indices.numel() > 0)
    assert doubted > 0  # (the permuted copies put the boundary in doubt at least once)


def test_no_doubt_no_exact_scores() -> None:
    sums = torch.tensor([1.0, 4.0, 9.0, 16.0], dtype=torch.float64)
    low, high = norm_bounds(sums, 2.0, 3, torch.float32)

    def exact(indices: torch.Tensor) -> torch.Tensor:
        raise AssertionError(f"scored {indices.tolist()} again although nothing was in doubt")

    settled, indices = settle_lowest_slices(sums.sqrt(), low, high, 2, None, exact)
    assert settled.tolist() == [True, True, False, False]
    assert indices.numel() == 0
