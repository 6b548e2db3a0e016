"""The references of ``reference.py`` checked on their own: counts, N:M groups, special cases, error ordering.

These are what make the references trustworthy as the ground truth the
calibrated strategies are compared with: each property below is one of the
papers' (or of their official code's) and fails if the reference drifts.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor

_spec = importlib.util.spec_from_file_location("calibration_reference", Path(__file__).with_name("reference.py"))
assert _spec is not None and _spec.loader is not None
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)

D_OUT, D_IN, ROWS = 64, 256, 1024


def _weight(seed: int = 1, shape: tuple[int, int] = (D_OUT, D_IN)) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _groups(mask: Tensor, m: int) -> Tensor:
    """``(d_out, d_in // m, m)``: the N:M groups along the input dim."""
    return mask.reshape(mask.shape[0], -1, m)


# --------------------------------------------------------------------------------------------- Wanda


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.7])
def test_wanda_prunes_the_same_count_in_every_row_and_the_lowest_metric(sparsity: float) -> None:
    weight, inputs = _weight(), ref.outlier_inputs(ROWS, D_IN, seed=0)
    keep = ref.reference_wanda(weight, inputs, sparsity=sparsity)
    assert keep.dtype == torch.bool
    assert ((~keep).sum(dim=1) == int(D_IN * sparsity)).all()
    metric = ref.wanda_metric(weight, inputs)
    pruned_max = metric.masked_fill(keep, -1.0).amax(dim=1)
    kept_min = metric.masked_fill(~keep, float("inf")).amin(dim=1)
    assert (pruned_max <= kept_min).all()


def test_wanda_scaler_row_is_the_official_running_mean_over_samples() -> None:
    x1, x2 = ref.unequal_scale_inputs(8, 6, seed=1), ref.unequal_scale_inputs(5, 6, seed=2)
    # a 2-D input is ONE sample: the sum of squares over its rows
    torch.testing.assert_close(ref.wanda_scaler_row(x1), (x1**2).sum(dim=0))
    # two calls: the mean over the two samples
    torch.testing.assert_close(ref.wanda_scaler_row([x1, x2]), ((x1**2).sum(dim=0) + (x2**2).sum(dim=0)) / 2)
    # a (batch, seq, d_in) input counts batch samples
    x3 = ref.unequal_scale_inputs(12, 6, seed=3)
    torch.testing.assert_close(ref.wanda_scaler_row(x3.reshape(4, 3, 6)), (x3**2).sum(dim=0) / 4)
    # the metric: |W_ij| times the input feature's L2 norm
    weight = _weight(shape=(3, 6))
    torch.testing.assert_close(ref.wanda_metric(weight, x1), weight.abs() * x1.norm(dim=0))


def test_wanda_masks_do_not_depend_on_how_the_rows_were_batched() -> None:
    weight, inputs = _weight(), ref.unequal_scale_inputs(ROWS, D_IN, seed=0)
    whole = ref.reference_wanda(weight, inputs, sparsity=0.5)
    assert torch.equal(whole, ref.reference_wanda(weight, list(inputs.split(256)), sparsity=0.5))
    assert not torch.equal(whole, ref.reference_magnitude(weight, sparsity=0.5, compare="row"))


def test_wanda_on_inputs_of_equal_feature_norms_is_row_magnitude() -> None:
    weight = _weight()
    inputs = 3.0 * torch.eye(D_IN)
    for kwargs in ({"sparsity": 0.5}, {"sparsity": None, "prune_n": 2, "prune_m": 4}):
        assert torch.equal(
            ref.reference_wanda(weight, inputs, **kwargs), ref.reference_magnitude(weight, compare="row", **kwargs)
        )


# --------------------------------------------------------------------------------------------- N:M, all three


@pytest.mark.parametrize(("prune_n", "prune_m"), [(2, 4), (1, 4), (4, 8)])
@pytest.mark.parametrize("method", ["wanda", "magnitude", "sparsegpt"])
def test_nm_prunes_prune_n_of_every_group_of_prune_m(method: str, prune_n: int, prune_m: int) -> None:
    weight, inputs = _weight(shape=(16, 64)), ref.outlier_inputs(256, 64, seed=0)
    if method == "wanda":
        keep = ref.reference_wanda(weight, inputs, sparsity=None, prune_n=prune_n, prune_m=prune_m)
        metric = ref.wanda_metric(weight, inputs)
    elif method == "magnitude":
        keep = ref.reference_magnitude(weight, sparsity=None, prune_n=prune_n, prune_m=prune_m)
        metric = weight.abs()
    else:
        new, keep = ref.reference_sparsegpt_with_mask(
            weight, inputs, sparsity=None, prune_n=prune_n, prune_m=prune_m, blocksize=32
        )
        assert (new[~keep] == 0).all()
        metric = None  # its scores are on the updated weights: checked by the ordering tests
    assert ((~_groups(keep, prune_m)).sum(dim=2) == prune_n).all()
    if metric is not None:
        groups, kept = _groups(metric, prune_m), _groups(keep, prune_m)
        assert (groups.masked_fill(kept, -1.0).amax(dim=2) <= groups.masked_fill(~kept, float("inf")).amin(dim=2)).all()


def test_magnitude_over_the_tensor_prunes_exactly_the_count_or_one_more_with_the_official_threshold() -> None:
    weight = _weight()
    keep = ref.reference_magnitude(weight, sparsity=0.3)
    assert int((~keep).sum()) == int(weight.numel() * 0.3)
    assert (weight.abs()[~keep].max() <= weight.abs()[keep].min()).item()
    assert not ((~keep).sum(dim=1) == (~keep).sum(dim=1)[0]).all()  # over the tensor, not per row
    official = ref.reference_magnitude(weight, sparsity=0.3, official_threshold=True)
    assert int((~official).sum()) == int(weight.numel() * 0.3) + 1
    assert (official <= keep).all()


# --------------------------------------------------------------------------------------------- SparseGPT


def test_sparsegpt_hessian_is_two_over_samples_times_xtx() -> None:
    x1, x2 = ref.unequal_scale_inputs(10, 5, seed=1), ref.unequal_scale_inputs(7, 5, seed=2)
    torch.testing.assert_close(ref.sparsegpt_hessian(x1), 2 * x1.t() @ x1)
    torch.testing.assert_close(
        ref.sparsegpt_hessian([x1, x2], dtype=torch.float64),
        x1.double().t() @ x1.double() + x2.double().t() @ x2.double(),
    )


def test_sparsegpt_from_a_hessian_is_sparsegpt_from_its_inputs_whatever_its_scale() -> None:
    weight, inputs = _weight(), ref.outlier_inputs(ROWS, D_IN, seed=0)
    hessian = ref.sparsegpt_hessian(inputs)
    given = hessian.clone()
    expected = ref.reference_sparsegpt_with_mask(weight, inputs, sparsity=0.5)
    got = ref.reference_sparsegpt_from_hessian(weight, given, sparsity=0.5)
    assert torch.equal(given, hessian)  # not modified
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    # pruneplug's input_hessian is the mean of x xᵀ over rows: half of this one times the rows
    mean = ref.reference_sparsegpt_from_hessian(weight, hessian / (2 * ROWS), sparsity=0.5)
    assert torch.equal(mean[1], expected[1])
    torch.testing.assert_close(mean[0], expected[0], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"expected \(256, 256\)"):
        ref.reference_sparsegpt_from_hessian(weight, hessian[:-1, :-1], sparsity=0.5)


@pytest.mark.parametrize(("sparsity", "blocksize"), [(0.5, 128), (0.3, 64), (0.7, 100)])
def test_sparsegpt_prunes_the_same_count_in_every_block_of_columns(sparsity: float, blocksize: int) -> None:
    weight, inputs = _weight(), ref.outlier_inputs(ROWS, D_IN, seed=0)
    new, keep = ref.reference_sparsegpt_with_mask(weight, inputs, sparsity=sparsity, blocksize=blocksize)
    for start in range(0, D_IN, blocksize):
        block = ~keep[:, start : start + blocksize]
        assert int(block.sum()) == int(block.numel() * sparsity), start
    assert (new[~keep] == 0).all()
    # chosen over the whole block (all rows together), not row by row
    assert len(set((~keep).sum(dim=1).tolist())) > 1


def test_sparsegpt_official_threshold_prunes_one_more_entry_per_block_even_at_sparsity_zero() -> None:
    weight, inputs = _weight(), ref.unequal_scale_inputs(ROWS, D_IN, seed=0)
    for sparsity in (0.0, 0.5):
        _, keep = ref.reference_sparsegpt_with_mask(
            weight, inputs, sparsity=sparsity, blocksize=128, official_threshold=True
        )
        for start in (0, 128):
            assert int((~keep[:, start : start + 128]).sum()) == int(D_OUT * 128 * sparsity) + 1


def test_sparsegpt_at_sparsity_zero_returns_the_weight_unchanged() -> None:
    weight, inputs = _weight(), ref.outlier_inputs(ROWS, D_IN, seed=0)
    new, keep = ref.reference_sparsegpt_with_mask(weight, inputs, sparsity=0.0)
    assert keep.all()
    assert torch.equal(new, weight)


def test_sparsegpt_on_scaled_identity_inputs_is_magnitude_per_block_without_updates() -> None:
    weight = _weight()
    new, keep = ref.reference_sparsegpt_with_mask(weight, 2.0 * torch.eye(D_IN), sparsity=0.5, blocksize=64)
    for start in range(0, D_IN, 64):
        block = weight[:, start : start + 64]
        assert torch.equal(keep[:, start : start + 64], ref.reference_magnitude(block, sparsity=0.5))
    # H is diagonal: the OBS corrections of the kept weights are all zero
    assert torch.equal(new, weight * keep)


def test_sparsegpt_updates_the_kept_weights_and_lowers_the_error_of_its_own_mask() -> None:
    weight, inputs = _weight(), ref.outlier_inputs(ROWS, D_IN, seed=0)
    new, keep = ref.reference_sparsegpt_with_mask(weight, inputs, sparsity=0.5)
    assert (new[keep] != weight[keep]).float().mean() > 0.9
    updated, masked_only = (ref.reconstruction_error(weight, w, inputs) for w in (new, weight * keep))
    print(f"sparsegpt 50% on outlier inputs: error {updated:.4g} updated, {masked_only:.4g} with its mask alone")
    assert updated < 0.9 * masked_only


def test_sparsegpt_lazy_block_updates_equal_one_block_for_nm() -> None:
    """With N:M the mask depends on the current weights only, so the lazy batching must not change anything."""
    weight, inputs = _weight(), ref.unequal_scale_inputs(ROWS, D_IN, seed=0)
    kwargs = {"sparsity": None, "prune_n": 2, "prune_m": 4, "dtype": torch.float64}
    blocked = ref.reference_sparsegpt_with_mask(weight.double(), inputs, blocksize=32, **kwargs)
    whole = ref.reference_sparsegpt_with_mask(weight.double(), inputs, blocksize=D_IN, **kwargs)
    assert torch.equal(blocked[1], whole[1])
    torch.testing.assert_close(blocked[0], whole[0], rtol=1e-9, atol=1e-9)


def test_sparsegpt_in_float64_agrees_with_float32() -> None:
    weight, inputs = _weight(), ref.outlier_inputs(ROWS, D_IN, seed=0)
    single = ref.reference_sparsegpt(weight, inputs, sparsity=0.5)
    double = ref.reference_sparsegpt(weight.double(), inputs, sparsity=0.5, dtype=torch.float64)
    assert single.dtype == torch.float32 and double.dtype == torch.float64
    errors = [ref.reconstruction_error(weight, w, inputs) for w in (single, double)]
    assert errors[0] == pytest.approx(errors[1], rel=1e-3)


def test_sparsegpt_zeroes_dead_inputs_and_stays_finite() -> None:
    weight, inputs = _weight(), ref.unequal_scale_inputs(ROWS, D_IN, seed=0)
    inputs[:, [5, 200]] = 0
    new, keep = ref.reference_sparsegpt_with_mask(weight, inputs, sparsity=0.5)
    assert torch.isfinite(new).all()
    assert (new[:, [5, 200]] == 0).all()
    assert not keep[:, [5, 200]].any()  # their score w²/d² is 0: pruned first


def test_sparsegpt_one_pruned_column_gets_the_damped_obs_update_with_dead_inputs_in_the_mean() -> None:
    """Closed form: pruning column 0 moves column 1 by ``w0 · H01 / (H11 + damp)``, nothing else.

    Column 2 is dead (no input): zeroed, its ``H22`` set to 1 BEFORE the
    dampening, so ``damp = percdamp · (H00 + H11 + 1) / 3``. The inputs are
    small so that the 1 matters.
    """
    inputs = torch.tensor([[0.1, 0.2, 0.0], [-0.2, 0.1, 0.0], [0.3, 0.25, 0.0], [0.05, -0.1, 0.0]], dtype=torch.float64)
    weight = torch.tensor([[0.01, 1.0, 0.5], [-0.02, -2.0, 3.0]], dtype=torch.float64)
    h = 2 * inputs.t() @ inputs
    damp = 0.5 * (h[0, 0] + h[1, 1] + 1) / 3
    new, keep = ref.reference_sparsegpt_with_mask(
        weight, inputs, sparsity=None, prune_n=2, prune_m=3, percdamp=0.5, dtype=torch.float64
    )
    assert torch.equal(keep, torch.tensor([[False, True, False]] * 2))
    expected = torch.zeros_like(weight)
    expected[:, 1] = weight[:, 1] + weight[:, 0] * h[0, 1] / (h[1, 1] + damp)
    torch.testing.assert_close(new, expected, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------- the papers' ordering

GENERATORS: dict[str, Callable[[int, int, int], Tensor]] = {
    "unequal_scale": ref.unequal_scale_inputs,
    "outliers": ref.outlier_inputs,
}


@pytest.mark.parametrize("pattern", ["50%", "2:4"])
@pytest.mark.parametrize("data", list(GENERATORS))
def test_reconstruction_error_sparsegpt_below_wanda_below_row_magnitude(data: str, pattern: str) -> None:
    inputs, weight = GENERATORS[data](ROWS, D_IN, 0), _weight(seed=100)
    kwargs = {"sparsity": 0.5} if pattern == "50%" else {"sparsity": None, "prune_n": 2, "prune_m": 4}
    errors = {
        "sparsegpt": ref.reconstruction_error(weight, ref.reference_sparsegpt(weight, inputs, **kwargs), inputs),
        "wanda": ref.reconstruction_error(weight, weight * ref.reference_wanda(weight, inputs, **kwargs), inputs),
        "magnitude": ref.reconstruction_error(
            weight, weight * ref.reference_magnitude(weight, compare="row", **kwargs), inputs
        ),
    }
    dense = ref.reconstruction_error(weight, torch.zeros_like(weight), inputs)
    print(f"{data} {pattern}: " + ", ".join(f"{k} {v:.4g} ({v / dense:.4%})" for k, v in errors.items()))
    assert errors["sparsegpt"] < errors["wanda"] < errors["magnitude"]


def test_reconstruction_error_is_the_squared_output_difference() -> None:
    inputs = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    weight = torch.tensor([[1.0, 1.0]])
    pruned = torch.tensor([[1.0, 0.0]])
    # outputs 3, 2 against 1, 3: (2² + 1²)
    assert ref.reconstruction_error(weight, pruned, inputs) == 5.0
    assert ref.reconstruction_error(weight, pruned, inputs, relative=True) == 5.0 / 13.0


def test_the_generators_are_seeded_and_shaped_as_described() -> None:
    unequal = ref.unequal_scale_inputs(ROWS, D_IN, 0)
    assert torch.equal(unequal, ref.unequal_scale_inputs(ROWS, D_IN, 0))
    assert not torch.equal(unequal, ref.unequal_scale_inputs(ROWS, D_IN, 1))
    norms = unequal.norm(dim=0)
    assert norms.max() / norms.min() > 20
    outliers = ref.outlier_inputs(ROWS, D_IN, 0)
    norms = outliers.norm(dim=0)
    assert int((norms > 15 * norms.median()).sum()) == D_IN // 64
    assert norms.max() / norms.median() < 150


# --------------------------------------------------------------------------------------------- OWL


def test_outlier_ratio_is_taken_over_the_concatenated_block() -> None:
    ones, spiked = torch.ones(10, 10), torch.tensor([1.0] * 9 + [10.0])
    # block mean 119/110, threshold 5.41: the one spike is the only outlier of the 110 entries
    assert ref.reference_outlier_ratio([ones, spiked], threshold_m=5.0) == pytest.approx(100 / 110)
    assert ref.reference_outlier_ratio([spiked], threshold_m=5.0) == pytest.approx(10.0)
    assert ref.reference_outlier_ratio([spiked], threshold_m=6.0) == 0.0  # threshold 11.4


def _block(outliers: int) -> list[Tensor]:
    """A block of two layers' metrics with ``outliers`` entries at 100 among 200 ones."""
    first = torch.ones(100)
    second = torch.ones(100)
    second[:outliers] = 100.0
    return [first, second]


def test_owl_ratios_follow_the_official_normalisation() -> None:
    blocks = [_block(0), _block(2), _block(1), _block(4)]
    ratios = [ref.reference_outlier_ratio(b) for b in blocks]
    assert ratios == [0.0, 1.0, 0.5, 2.0]
    sparsities = ref.reference_owl_ratios(blocks, sparsity=0.5, lamda=0.08)
    # densities before centring: (D - 0) / 2 * 0.16 = 0, 0.08, 0.04, 0.16; mean 0.07
    expected = [1 - (d - 0.07 + 0.5) for d in (0.0, 0.08, 0.04, 0.16)]
    assert sparsities == pytest.approx(expected)
    assert sum(sparsities) / 4 == pytest.approx(0.5)
    assert max(sparsities) - min(sparsities) == pytest.approx(0.16)
    assert sparsities.index(min(sparsities)) == 3  # the most outliers: pruned least


def test_owl_clamps_a_non_positive_sparsity_to_one_percent_and_refuses_equal_ratios() -> None:
    sparsities = ref.reference_owl_ratios([_block(0), _block(4)], sparsity=0.05, lamda=0.08)
    assert sparsities == pytest.approx([0.13, 0.01])  # 0.05 ± 0.08: -0.03 becomes 0.01
    with pytest.raises(ValueError, match="divides by zero"):
        ref.reference_owl_ratios([_block(1), _block(1)], sparsity=0.5)


def test_owl_ratios_from_wanda_metrics_favour_the_outlier_block() -> None:
    weight = _weight()
    blocks = [
        [ref.wanda_metric(weight, ref.unequal_scale_inputs(ROWS, D_IN, 0))],
        [ref.wanda_metric(weight, ref.outlier_inputs(ROWS, D_IN, 0))],
        [ref.wanda_metric(weight, torch.randn(ROWS, D_IN, generator=torch.Generator().manual_seed(0)))],
    ]
    sparsities = ref.reference_owl_ratios(blocks, sparsity=0.6)
    assert sum(sparsities) / 3 == pytest.approx(0.6)
    assert sparsities[2] == max(sparsities)  # i.i.d. features: the fewest outliers, pruned most
