"""The registered data-aware strategies ``wanda``, ``sparsegpt`` and their baseline ``magnitude``.

Wanda's masks are checked against its formula written out here; all three
against the exact-count, N:M and iterative-pruning rules on random layers
(hypothesis); sparsegpt's values against the core's contract (they land in
``weight_orig``, ``remove`` keeps them, a failure leaves everything as it
was); and every refusal names what is wrong.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, strategies as st
from torch import Tensor, nn

import pruneplug
import pruneplug.compat
from pruneplug import (
    CalibrationError,
    CalibrationRequiredError,
    IncompatibleStrategyError,
    InvalidDimError,
    InvalidParametersError,
)
from pruneplug.selection.scores import scoring
from pruneplug.strategies import Magnitude, SparseGPT, Wanda

_spec = importlib.util.spec_from_file_location(
    "calibration_helpers", Path(__file__).parents[1] / "calibration" / "helpers.py"
)
assert _spec is not None and _spec.loader is not None
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)


def calibration(features: int, rows: int = 256, seed: int = 0) -> Tensor:
    """Inputs whose features have unequal scales (else Wanda is per-row magnitude)."""
    generator = torch.Generator().manual_seed(seed)
    scales = torch.rand(features, generator=generator) * 4 + 0.05
    return torch.randn(rows, features, generator=generator) * scales


def statistics(module: nn.Module, x: Tensor) -> dict[nn.Module, dict[str, Tensor]]:
    """What calibration would collect for ``module`` from the inputs ``x``: mean x_j² and mean x xᵀ."""
    return {module: helpers.exact_statistics(x)}


@contextmanager
def calibrated(module: nn.Module, x: Tensor) -> Iterator[None]:
    with pruneplug.using_statistics(statistics(module, x)):
        yield


# --- wanda against its formula ------------------------------------------------------------


def wanda_metric(weight: Tensor, x: Tensor) -> Tensor:
    """|W_ij| * ||X_j||_2 (Linear layout), with the norm over all calibration rows."""
    return weight.abs() * torch.linalg.vector_norm(x, dim=0)


def test_wanda_per_row_is_the_formula() -> None:
    layer, x = nn.Linear(24, 6), calibration(24)
    weight = layer.weight.detach().clone()
    with calibrated(layer, x):
        pruneplug.prune(layer, "weight", "wanda", amount=0.5)
    metric = wanda_metric(weight, x)
    expected = torch.ones_like(weight, dtype=torch.bool)
    for row in range(6):
        expected[row, metric[row].argsort()[:12]] = False
    assert torch.equal(layer.weight_mask, expected)


def test_wanda_per_tensor_is_the_formula() -> None:
    layer, x = nn.Linear(24, 6), calibration(24)
    weight = layer.weight.detach().clone()
    with calibrated(layer, x):
        pruneplug.prune(layer, "weight", "wanda", amount=0.3, compare="tensor")
    metric = wanda_metric(weight, x).reshape(-1)
    expected = torch.ones(144, dtype=torch.bool)
    expected[metric.argsort()[: round(0.3 * 144)]] = False
    assert torch.equal(layer.weight_mask, expected.reshape(6, 24))


def test_wanda_n_of_m_is_the_formula() -> None:
    layer, x = nn.Linear(24, 6), calibration(24)
    weight = layer.weight.detach().clone()
    with calibrated(layer, x):
        pruneplug.prune(layer, "weight", "wanda", keep_n=2, of_m=4)
    groups = wanda_metric(weight, x).reshape(-1, 4)
    expected = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, groups.topk(2, dim=1).indices, True)
    assert torch.equal(layer.weight_mask, expected.reshape(6, 24))


@pytest.mark.parametrize("params", [{"amount": 0.5}, {"amount": 0.4, "compare": "tensor"}, {"keep_n": 1, "of_m": 4}])
def test_wanda_on_gpt2_conv1d_meets_the_inputs_on_dim_0(params: dict[str, Any]) -> None:
    from transformers.pytorch_utils import Conv1D

    conv, linear, x = Conv1D(6, 16), nn.Linear(16, 6), calibration(16)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.T)
    with calibrated(conv, x):
        pruneplug.prune(conv, "weight", "wanda", **params)
    with calibrated(linear, x):
        pruneplug.prune(linear, "weight", "wanda", **params)
    assert torch.equal(conv.weight_mask, linear.weight_mask.T)


def test_sparsegpt_on_gpt2_conv1d_is_the_linear_result_transposed() -> None:
    from transformers.pytorch_utils import Conv1D

    conv, linear, x = Conv1D(6, 16), nn.Linear(16, 6), calibration(16)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.T)
    with calibrated(conv, x):
        pruneplug.prune(conv, "weight", "sparsegpt", amount=0.5)
    with calibrated(linear, x):
        pruneplug.prune(linear, "weight", "sparsegpt", amount=0.5)
    assert torch.equal(conv.weight_mask, linear.weight_mask.T)
    torch.testing.assert_close(conv.weight_orig, linear.weight_orig.T)


def test_magnitude_per_tensor_is_l1_unstructured_and_per_row_is_each_rows_smallest() -> None:
    weight = torch.randn(5, 16)
    assert torch.equal(
        pruneplug.compute_mask("magnitude", weight, amount=0.4),
        pruneplug.compute_mask("l1_unstructured", weight, amount=0.4),
    )
    per_row = pruneplug.compute_mask("magnitude", weight, amount=0.25, compare="row")
    expected = torch.ones_like(weight, dtype=torch.bool)
    for row in range(5):
        expected[row, weight[row].abs().argsort()[:4]] = False
    assert torch.equal(per_row, expected)


# --- global selection --------------------------------------------------------------------


def test_global_wanda_ranks_every_layer_by_the_formula() -> None:
    first, second = nn.Linear(12, 4), nn.Linear(8, 6)
    x1, x2 = calibration(12, seed=1), calibration(8, seed=2)
    metrics = torch.cat(
        [wanda_metric(first.weight.detach(), x1).reshape(-1), wanda_metric(second.weight.detach(), x2).reshape(-1)]
    )
    with pruneplug.using_statistics({**statistics(first, x1), **statistics(second, x2)}):
        pruneplug.prune_global([(first, "weight"), (second, "weight")], "wanda", amount=0.5, compare="tensor")
    expected = torch.ones(96, dtype=torch.bool)
    expected[metrics.argsort()[:48]] = False
    assert torch.equal(torch.cat([first.weight_mask.reshape(-1), second.weight_mask.reshape(-1)]), expected)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"amount": 0.5}, "compare='row' ranks the entries of each output row on its own; pass compare='tensor'"),
        ({"keep_n": 2, "of_m": 4}, r"N:M \(2 of every 4\) is a rule within each group"),
    ],
)
def test_global_selection_refuses_what_selects_within_one_tensor(params: dict[str, Any], message: str) -> None:
    layer, x = nn.Linear(8, 4), calibration(8)
    with calibrated(layer, x), pytest.raises(IncompatibleStrategyError, match=message):
        pruneplug.prune_global([(layer, "weight")], "wanda", **params)
    assert not pruneplug.is_pruned(layer)
    with pytest.raises(IncompatibleStrategyError, match=message):
        pruneplug.compat.global_unstructured([(layer, "weight")], Magnitude, compare="row", **params)


# --- exact counts, N:M validity and iterative pruning, on random layers ---------------------


@st.composite
def layers(draw: st.DrawFn) -> tuple[nn.Linear, Tensor, Tensor]:
    """A Linear layer with calibration inputs and a first mask (what an earlier prune left)."""
    seed = draw(st.integers(0, 2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    out_features, groups = draw(st.integers(1, 6)), draw(st.integers(1, 4))
    layer = nn.Linear(4 * groups, out_features)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator))
    x = calibration(4 * groups, rows=draw(st.integers(1, 64)), seed=seed)
    alive = torch.rand(layer.weight.shape, generator=generator) > draw(st.floats(0.0, 0.6))
    return layer, x, alive


SETTINGS = st.sampled_from(
    [
        ("magnitude", {"compare": "tensor"}),
        ("magnitude", {"compare": "row"}),
        ("magnitude", {"keep_n": 2, "of_m": 4}),
        ("wanda", {"compare": "row"}),
        ("wanda", {"compare": "tensor"}),
        ("wanda", {"keep_n": 1, "of_m": 4}),
        ("sparsegpt", {}),
        ("sparsegpt", {"keep_n": 2, "of_m": 4, "block_size": 4}),
        ("sparsegpt", {"block_size": 4}),
    ]
)


@given(layers(), SETTINGS, st.floats(0.0, 1.0))
def test_pruning_again_keeps_exact_counts_and_only_loses_entries(
    layer_case: tuple[nn.Linear, Tensor, Tensor], setting: tuple[str, dict[str, Any]], amount: float
) -> None:
    layer, x, first = layer_case
    name, params = setting
    n_of_m = "keep_n" in params
    pruneplug.prune(layer, "weight", "custom_from_mask", mask=first)
    with calibrated(layer, x):
        pruneplug.prune(layer, "weight", name, **params, **({} if n_of_m else {"amount": amount}))
    mask = layer.weight_mask
    assert not bool((mask & ~first).any())  # masks only lose ones
    if n_of_m:
        groups, alive = mask.reshape(-1, params["of_m"]), first.reshape(-1, params["of_m"])
        assert torch.equal(groups.sum(1), alive.sum(1).clamp(max=params["keep_n"]))
    elif params.get("compare") == "row":
        left = first.sum(1)
        assert torch.equal(mask.sum(1), left - torch.tensor([round(amount * int(n)) for n in left]))
    else:
        left = int(first.sum())
        assert int(mask.sum()) == left - round(amount * left)
    if name == "sparsegpt":  # the pruned entries are zero in weight_orig, the update's values are finite
        assert bool((layer.weight_orig[~mask] == 0).all()) and bool(torch.isfinite(layer.weight_orig).all())


# --- sparsegpt's updated values -------------------------------------------------------------


def test_sparsegpt_updates_land_in_weight_orig_and_remove_keeps_them() -> None:
    layer, x = nn.Linear(32, 8), calibration(32)
    parameter, before = layer.weight, layer.weight.detach().clone()
    with calibrated(layer, x):
        pruneplug.prune(layer, "weight", "sparsegpt", amount=0.5, block_size=8)
    assert layer.weight_orig is parameter
    mask = layer.weight_mask
    kept_changed = (layer.weight_orig != before) & mask
    assert bool(kept_changed.any())  # the kept weights were updated, not only masked
    assert bool((layer.weight_orig[~mask] == 0).all())
    # the update makes up for what was pruned: the outputs on the calibration data move less
    updated = torch.linalg.norm(x @ (before - layer.weight).T)
    masked_only = torch.linalg.norm(x @ (before - before * mask).T)
    assert updated < masked_only
    updated_values = layer.weight.detach().clone()
    pruneplug.remove(layer, "weight")
    assert layer.weight is parameter and torch.equal(layer.weight, updated_values)


def test_sparsegpt_compute_mask_gives_the_mask_without_the_update() -> None:
    layer, x = nn.Linear(16, 4), calibration(16)
    weight = layer.weight.detach().clone()
    with calibrated(layer, x), scoring(layer, "weight", layer.weight):
        alone = SparseGPT(amount=0.5).compute_mask(weight, torch.ones_like(weight))
        through_the_api = pruneplug.compute_mask("sparsegpt", weight, amount=0.5)
    with calibrated(layer, x):
        SparseGPT.apply(layer, "weight", amount=0.5)  # torch's path: the mask only, float as torch's
    assert layer.weight_mask.dtype == torch.float32
    assert torch.equal(layer.weight_mask.bool(), alone.bool()) and torch.equal(through_the_api, alone.bool())
    assert torch.equal(layer.weight_orig, weight)
    other = nn.Linear(16, 4)
    with torch.no_grad():
        other.weight.copy_(weight)
    with calibrated(other, x):
        pruneplug.prune(other, "weight", "sparsegpt", amount=0.5)
    assert torch.equal(other.weight_mask, alone.bool())


@pytest.mark.parametrize("pruned_before", [False, True])
def test_a_failing_sparsegpt_changes_nothing(pruned_before: bool) -> None:
    layer, x = nn.Linear(8, 4), calibration(8)
    if pruned_before:
        pruneplug.prune(layer, "weight", "l1_unstructured", amount=5)
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    stats = statistics(layer, x)
    stats[layer]["input_hessian"][1, 2] = float("nan")
    with pruneplug.using_statistics(stats), pytest.raises(CalibrationError, match=r"Linear\.weight.*NaN or infinite"):
        pruneplug.prune(layer, "weight", "sparsegpt", amount=0.5)
    assert layer.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in layer.state_dict().items())
    assert len(pruneplug.pruning_history(layer, "weight")) == (1 if pruned_before else 0)


def test_a_hessian_that_cannot_be_factorized_names_the_layer_and_the_damp() -> None:
    layer = nn.Linear(4, 2)
    before = layer.weight.detach().clone()
    with (
        pruneplug.using_statistics({layer: {"input_hessian": -torch.eye(4)}}),
        pytest.raises(CalibrationError, match=r"Linear\.weight, strategy 'sparsegpt': .*damp=0\.01 .*larger damp"),
    ):
        pruneplug.prune(layer, "weight", "sparsegpt", amount=0.5)
    assert not pruneplug.is_pruned(layer) and torch.equal(layer.weight, before)


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(("strategy", "statistic"), [("wanda", "input_sq_norms"), ("sparsegpt", "input_hessian")])
def test_without_statistics_the_error_names_module_tensor_strategy_and_statistic(strategy: str, statistic: str) -> None:
    layer = nn.Linear(8, 4)
    pattern = rf"Linear\.weight, strategy '{strategy}': .*'{statistic}'.*prune_calibrated.*using_statistics"
    with pytest.raises(CalibrationRequiredError, match=pattern):
        pruneplug.prune(layer, "weight", strategy, amount=0.5)
    another_modules = {nn.Linear(8, 4): {statistic: torch.ones(8)}}
    with (
        pruneplug.using_statistics(another_modules),
        pytest.raises(CalibrationRequiredError, match="none were collected for this module"),
    ):
        pruneplug.prune(layer, "weight", strategy, amount=0.5)
    with pytest.raises(CalibrationRequiredError, match="a bare tensor has none"):
        pruneplug.compute_mask(strategy, torch.randn(4, 8), amount=0.5)
    assert not pruneplug.is_pruned(layer)


@pytest.mark.parametrize(
    ("strategy", "statistic", "wrong", "message"),
    [
        ("wanda", "input_sq_norms", torch.ones(7), r"has shape \(7,\), but this layer needs \(8,\)"),
        ("sparsegpt", "input_hessian", torch.eye(4), r"has shape \(4, 4\), but this layer needs \(8, 8\)"),
    ],
)
def test_statistics_of_the_wrong_shape_name_both_shapes(
    strategy: str, statistic: str, wrong: Tensor, message: str
) -> None:
    layer = nn.Linear(8, 4)
    with pruneplug.using_statistics({layer: {statistic: wrong}}), pytest.raises(CalibrationError, match=message):
        pruneplug.prune(layer, "weight", strategy, amount=0.5)
    assert not pruneplug.is_pruned(layer)


@pytest.mark.parametrize("strategy", ["wanda", "sparsegpt", "magnitude"])
@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "pass amount .* or keep_n and of_m"),
        ({"amount": 0.5, "keep_n": 2, "of_m": 4}, "not both: got amount=0.5, keep_n=2, of_m=4"),
        ({"keep_n": 2}, "N:M needs both keep_n and of_m"),
        ({"keep_n": 4, "of_m": 4}, "keep_n=4 must be smaller than of_m=4"),
        ({"keep_n": 0, "of_m": 4}, "keep_n: Input should be greater than or equal to 1"),
        ({"keep_n": 2.0, "of_m": 4}, "keep_n: Input should be a valid integer"),
    ],
)
def test_parameters_are_checked_naming_the_fields(strategy: str, params: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidParametersError, match=message):
        pruneplug.prune(nn.Linear(8, 4), "weight", strategy, **params)


def test_a_direct_construction_is_checked_too() -> None:
    with pytest.raises(InvalidParametersError, match="not both"):
        Wanda(amount=0.5, keep_n=2, of_m=4)
    with pytest.raises(InvalidParametersError, match=r"1 <= keep_n < of_m"):
        SparseGPT(keep_n=0, of_m=4)
    with pytest.raises(InvalidParametersError, match="compare must be 'row' or 'tensor'"):
        Magnitude(amount=0.5, compare="column")
    with pytest.raises(InvalidParametersError, match="of_m=4 does not divide the 6 entries along dim 1"):
        pruneplug.compute_mask("magnitude", torch.randn(3, 6), keep_n=2, of_m=4)
    with pytest.raises(InvalidDimError, match=r"compare='row' needs the 2-D weight .* shape \(2, 3, 4\)"):
        pruneplug.compute_mask("magnitude", torch.randn(2, 3, 4), amount=0.5, compare="row")


def test_what_each_strategy_needs_from_calibration() -> None:
    wanda, sparsegpt, magnitude = Wanda(amount=0.5), SparseGPT(amount=0.5), Magnitude(amount=0.5)
    assert all(isinstance(s, pruneplug.NeedsStatistics) for s in (wanda, sparsegpt, magnitude))
    assert wanda.required_statistics() == ("input_sq_norms",)
    assert sparsegpt.required_statistics() == ("input_hessian",)
    assert magnitude.required_statistics() == ()
    assert isinstance(sparsegpt, pruneplug.UpdatesValues) and not isinstance(wanda, pruneplug.UpdatesValues)
    kinds = {s.name: s.kind for s in pruneplug.get_registry().specs()}
    assert (kinds["wanda"], kinds["magnitude"], kinds["sparsegpt"]) == ("unstructured", "unstructured", "global")


def test_how_each_strategy_counts_its_amount_is_declared() -> None:
    """``CountsPerRow.row_dim``: the input dim for compare="row" (0 on GPT-2's Conv1D), else over the tensor."""
    from transformers.pytorch_utils import Conv1D

    weight = torch.randn(3, 8)
    wanda, magnitude = Wanda(amount=0.5), Magnitude(amount=0.5, compare="row")
    assert isinstance(wanda, pruneplug.CountsPerRow) and isinstance(magnitude, pruneplug.CountsPerRow)
    assert wanda.row_dim(weight) == magnitude.row_dim(weight) == 1
    assert Wanda(amount=0.5, compare="tensor").row_dim(weight) is None
    assert Magnitude(amount=0.5).row_dim(weight) is None
    assert Wanda(keep_n=2, of_m=4).row_dim(weight) is None
    conv = Conv1D(3, 8)
    with scoring(conv, "weight", conv.weight):
        assert wanda.row_dim(conv.weight) == 0
    assert not isinstance(SparseGPT(amount=0.5), pruneplug.CountsPerRow)  # it counts over the whole tensor
