"""``obs_prune``: SparseGPT's OBS pruning of one weight given its Hessian, as a pure function.

Checked here: the update on a case worked out by hand, the reduction to
magnitude pruning when the inputs are uncorrelated, that the update lowers the
reconstruction error of the same mask, exact counts and N:M validity with
already-pruned entries, and every refusal. (The comparison with an
independent implementation of the paper's algorithm is in tests/calibration.)
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from pruneplug import CalibrationError, InvalidAmountError, InvalidParametersError
from pruneplug.strategies import obs_prune
from pruneplug.strategies._obs import _all_finite, _half_turn_, _inverse_factor, _invert_lower_


def calibration(rows: int, features: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Inputs with unequal feature scales and correlations, and their mean ``x xᵀ``."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(features, features, generator=generator) * 0.3 + torch.eye(features)
    x = (torch.randn(rows, features, generator=generator) @ mixing) * torch.rand(features, generator=generator) * 3
    return x, x.T @ x / rows


def test_the_update_of_a_two_column_case_worked_out_by_hand() -> None:
    # H = [[2, 1], [1, 4]]: w1 = 0.1 scores 0.1² / [H⁻¹]_00 = 0.0175, w2 = 1 scores 1 / (2/7) = 3.5; w1 goes, and
    # the best w2 then minimizes (δ)ᵀHδ with δ = (-0.1, Δ): Δ = H_01 w1 / H_11 = 0.025.
    keep, new = obs_prune(torch.tensor([[0.1, 1.0]]), torch.tensor([[2.0, 1.0], [1.0, 4.0]]), amount=1, damp=0.0)
    assert keep.tolist() == [[False, True]]
    torch.testing.assert_close(new, torch.tensor([[0.0, 1.025]]))


def test_uncorrelated_inputs_of_equal_scale_reduce_it_to_magnitude_pruning() -> None:
    weight = torch.randn(8, 32)
    keep, new = obs_prune(weight, torch.eye(32) * 3.0, amount=0.5, block_size=32)
    expected = torch.zeros(256, dtype=torch.bool)
    expected[weight.abs().reshape(-1).topk(128).indices] = True
    assert torch.equal(keep, expected.reshape(8, 32))
    assert torch.equal(new, weight * keep)  # no correlations: nothing to compensate


@pytest.mark.parametrize("sparsity", [{"amount": 0.5}, {"keep_n": 2, "of_m": 4}])
def test_the_update_lowers_the_reconstruction_error_of_its_mask(sparsity: dict[str, float]) -> None:
    x, hessian = calibration(512, 64)
    weight = torch.randn(32, 64)
    keep, new = obs_prune(weight, hessian, block_size=16, **sparsity)  # type: ignore[arg-type]
    updated = torch.linalg.norm((weight - new) @ x.T)
    masked_only = torch.linalg.norm((weight - weight * keep) @ x.T)
    assert updated < 0.8 * masked_only
    assert bool((new[~keep] == 0).all())


def test_exact_counts_and_dead_entries_that_stay_pruned_and_zero() -> None:
    _, hessian = calibration(256, 48)
    weight = torch.randn(10, 48)
    alive = torch.rand(10, 48) > 0.3
    keep, new = obs_prune(weight, hessian, amount=0.4, alive=alive, block_size=16)
    left = int(alive.sum())
    assert int(keep.sum()) == left - round(0.4 * left)
    assert not bool((keep & ~alive).any()) and bool((new[~keep] == 0).all())
    # a dead entry counts as 0 whatever value it still holds (a plain prune leaves its value in <name>_orig)
    assert torch.equal(new, obs_prune(weight * alive, hessian, amount=0.4, alive=alive, block_size=16)[1])
    keep, new = obs_prune(weight, hessian, amount=7, alive=alive, block_size=16)
    assert int(keep.sum()) == left - 7
    with pytest.raises(InvalidAmountError, match=f"amount=1000 is larger than the {left} unpruned entries"):
        obs_prune(weight, hessian, amount=1000, alive=alive)


def test_n_of_m_with_dead_entries_keeps_at_most_keep_n_alive_of_each_group() -> None:
    _, hessian = calibration(256, 32)
    weight = torch.randn(6, 32)
    alive = torch.rand(6, 32) > 0.4
    keep, new = obs_prune(weight, hessian, keep_n=2, of_m=4, alive=alive, block_size=8)
    groups, live = keep.reshape(-1, 4), alive.reshape(-1, 4)
    assert torch.equal(groups.sum(1), live.sum(1).clamp(max=2))
    assert not bool((keep & ~alive).any()) and bool((new[~keep] == 0).all())


def test_inputs_that_never_fired_are_zeroed_as_in_the_paper_code() -> None:
    x, _ = calibration(256, 16)
    x[:, 3] = 0.0
    keep, new = obs_prune(torch.randn(4, 16), x.T @ x / 256, amount=0.25)
    assert bool((new[:, 3] == 0).all()) and not bool(keep[:, 3].any())  # score 0: pruned first


def test_nothing_to_prune_changes_nothing_and_reads_no_hessian() -> None:
    weight = torch.randn(4, 8)
    keep, new = obs_prune(weight, torch.full((8, 8), float("nan")), amount=0)
    assert bool(keep.all()) and torch.equal(new, weight)


def test_dtype_and_layout_follow_the_weight_and_the_inputs_are_left_alone() -> None:
    _, hessian = calibration(128, 16)
    weight = torch.randn(16, 8).to(torch.bfloat16).t()  # (8, 16) with a transposed layout, as a Conv1D's .t()
    before, hessian_before = weight.clone(), hessian.clone()
    keep, new = obs_prune(weight, hessian, amount=0.5)
    assert new.dtype == torch.bfloat16 and new.stride() == weight.stride() and keep.stride() == weight.stride()
    assert torch.equal(weight, before) and torch.equal(hessian, hessian_before)
    expected_keep, expected = obs_prune(weight.contiguous(), hessian, amount=0.5)
    assert torch.equal(keep, expected_keep) and torch.equal(new, expected)


def test_a_hessian_that_is_not_finite_or_not_positive_definite_is_refused() -> None:
    weight = torch.randn(4, 8)
    hessian = torch.eye(8)
    hessian[2, 5] = float("nan")
    with pytest.raises(CalibrationError, match="NaN or infinite"):
        obs_prune(weight, hessian, amount=0.5)
    with pytest.raises(CalibrationError, match=r"failed with damp=0\.0 .*pass a larger damp \(e\.g\. damp=0\.01\)"):
        obs_prune(weight, -torch.eye(8) + 0.5, amount=0.5, damp=0.0)


def test_bad_arguments_are_refused_by_name() -> None:
    weight, hessian = torch.randn(4, 8), torch.eye(8)
    with pytest.raises(CalibrationError, match=r"Hessian has shape \(4, 4\), expected \(8, 8\)"):
        obs_prune(weight, torch.eye(4), amount=0.5)
    with pytest.raises(InvalidParametersError, match="either amount or both keep_n and of_m"):
        obs_prune(weight, hessian, amount=0.5, keep_n=2, of_m=4)
    with pytest.raises(InvalidParametersError, match="either amount or both keep_n and of_m"):
        obs_prune(weight, hessian)
    with pytest.raises(InvalidParametersError, match="block_size=6 is not a multiple of of_m=4"):
        obs_prune(weight, hessian, keep_n=2, of_m=4, block_size=6)
    with pytest.raises(InvalidParametersError, match="of_m=3 does not divide the 8 entries"):
        obs_prune(weight, hessian, keep_n=1, of_m=3, block_size=6)
    with pytest.raises(InvalidParametersError, match="damp must be a finite number >= 0"):
        obs_prune(weight, hessian, amount=0.5, damp=-1.0)
    with pytest.raises(InvalidParametersError, match=r"must be 2-D \(rows, columns\), got shape \(8,\)"):
        obs_prune(torch.randn(8), hessian, amount=0.5)


@pytest.mark.parametrize("size", [1, 2, 127, 128, 129, 300])
def test_the_in_place_steps_equal_what_they_replace(size: int) -> None:
    torch.manual_seed(size)
    matrix = torch.randn(size, size, dtype=torch.float64)
    turned = matrix.clone()
    _half_turn_(turned)
    assert torch.equal(turned, matrix.flip(0, 1))

    lower = torch.linalg.cholesky(matrix @ matrix.T + size * torch.eye(size, dtype=torch.float64))
    row_major = torch.empty_strided((size, size), (size, 1), dtype=torch.float64).copy_(lower)
    column_major = torch.empty_strided((size, size), (1, size), dtype=torch.float64).copy_(lower)  # as _inverse_factor
    for layout in (row_major, column_major):
        _invert_lower_(layout)
        torch.testing.assert_close(layout, torch.linalg.inv(lower), rtol=1e-10, atol=1e-12)
        assert not bool(layout.triu(1).any())  # the zeros above the diagonal stay zeros


def test_the_inverse_factor_is_the_one_of_the_paper_code() -> None:
    _, hessian = calibration(700, 300)  # wider than two panels
    hessian[:, 7] = hessian[7, :] = 0.0  # an input that never fired
    factor, dead = _inverse_factor(hessian, 0.01, torch.device("cpu"))
    damped = hessian.double().clone()
    diagonal = damped.diagonal()
    diagonal.masked_fill_(diagonal == 0, 1.0)
    diagonal.add_(0.01 * diagonal.mean())
    expected = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(damped)), upper=True)
    torch.testing.assert_close(factor.double(), expected, rtol=2e-4, atol=1e-5)
    assert dead.nonzero().flatten().tolist() == [7]


def test_a_non_finite_entry_anywhere_is_found() -> None:
    matrix = torch.zeros(300, 300)
    assert _all_finite(matrix)
    matrix[299, 5] = float("nan")  # in the last, short panel
    assert not _all_finite(matrix)
