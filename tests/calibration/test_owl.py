"""owl_amounts: per-block amounts from the outliers of the dense model's Wanda metric, mean ``amount``."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import pruneplug
from pruneplug.calibration.owl import owl_sparsities

_spec = importlib.util.spec_from_file_location("calibration_helpers", Path(__file__).with_name("helpers.py"))
assert _spec is not None and _spec.loader is not None
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)


def direct_owl(blocks: list[list[nn.Linear]], run: Any, amount: float) -> list[float]:
    """OWL by hand: the blocks' outlier ratios of ``|W| · ‖X_j‖`` (5 * mean), scaled onto 2 * 0.08, mean ``amount``."""
    sums: dict[nn.Module, Tensor] = {}

    def hook(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
        x = args[0].reshape(-1, args[0].shape[-1]).double()
        sums[module] = sums.get(module, torch.zeros(x.shape[1], dtype=torch.float64)) + (x * x).sum(0)

    with helpers.forward_hooks([m for block in blocks for m in block], hook):
        run()
    ratios = []
    for block in blocks:
        flat = torch.cat([(m.weight.detach().double().abs() * sums[m].sqrt().reshape(1, -1)).flatten() for m in block])
        ratios.append(float((flat > 5 * flat.mean()).double().mean()) * 100)  # OWL counts percents
    low, high = min(ratios), max(ratios)
    scaled = [(r - low) / (high - low) * 0.08 * 2 for r in ratios]
    mean = sum(scaled) / len(scaled)
    return [1 - (s - mean + (1 - amount)) for s in scaled]


def outlier_stack() -> helpers.Stack:
    """A 3-block stack whose block 1 has a few very large weights (many outliers)."""
    torch.manual_seed(11)
    model = helpers.Stack(depth=3)
    with torch.no_grad():
        model.blocks[1].fc1.weight[:, 0] *= 40
        model.blocks[2].fc2.weight[0, :3] *= 10
    return model


def test_owl_amounts_follow_the_papers_formula_and_average_to_amount() -> None:
    model = outlier_stack()
    batches = helpers.feature_batches(count=3)
    amounts = pruneplug.owl_amounts(model, batches, amount=0.5)
    names = [f"blocks.{i}.fc{j}" for i in range(3) for j in (1, 2)]
    assert list(amounts) == names
    per_block = [amounts[f"blocks.{i}.fc1"] for i in range(3)]
    assert all(amounts[f"blocks.{i}.fc2"] == per_block[i] for i in range(3))
    expected = direct_owl([[b.fc1, b.fc2] for b in model.blocks], lambda: [model(b) for b in batches], 0.5)
    assert per_block == pytest.approx(expected, abs=1e-9)
    assert sum(per_block) / 3 == pytest.approx(0.5)
    assert max(per_block) - min(per_block) == pytest.approx(0.16)
    assert per_block.index(min(per_block)) == 1  # the block with the most outliers is pruned least


def test_owl_amounts_on_gpt2_read_conv1d_weights_transposed() -> None:
    model = helpers.tiny_gpt2(layers=3)
    batches = [{"input_ids": ids} for ids in helpers.token_batches(count=2)]
    amounts = pruneplug.owl_amounts(model, batches, amount=0.6, spread=0.05)
    assert len(amounts) == 12
    blocks = [[m for m in block.modules() if type(m).__name__ == "Conv1D"] for block in model.transformer.h]
    sums: dict[nn.Module, Tensor] = {}
    with helpers.forward_hooks(
        [m for block in blocks for m in block],
        lambda m, a, o: sums.__setitem__(m, sums.get(m, 0) + a[0].double().pow(2).sum((0, 1))),
    ):
        for b in batches:
            model(**b, use_cache=False)
    ratios = []
    for block in blocks:  # Conv1D weights are (in, out): the norms scale the rows
        flat = torch.cat([(m.weight.detach().double().abs() * sums[m].sqrt().reshape(-1, 1)).flatten() for m in block])
        ratios.append(float((flat > 5 * flat.mean()).double().mean()))
    expected = owl_sparsities(ratios, 0.6, 0.05)
    assert [amounts[f"transformer.h.{i}.attn.c_attn"] for i in range(3)] == pytest.approx(expected, abs=1e-9)


def test_owl_amounts_change_nothing() -> None:
    model = outlier_stack()
    model.train()
    before = helpers.state_of(model)
    pruneplug.owl_amounts(model, helpers.feature_batches(), amount=0.3)
    assert helpers.same(before, helpers.state_of(model))


def test_equal_outlier_ratios_give_every_block_amount() -> None:
    model = helpers.Stack(depth=1)
    assert set(pruneplug.owl_amounts(model, helpers.feature_batches(), amount=0.4).values()) == {0.4}
    assert owl_sparsities([2.0, 2.0], 0.3, 0.08) == [0.3, 0.3]


def test_sparsities_at_or_below_zero_become_one_percent_as_in_owl() -> None:
    assert owl_sparsities([0.0, 1.0], 0.05, 0.08) == pytest.approx([0.13, 0.01])
    assert owl_sparsities([0.0, 1.0], 0.97, 0.08) == pytest.approx([1.0, 0.89])


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"amount": 1.5}, pruneplug.InvalidAmountError, r"amount must be a fraction in \[0, 1\], got 1.5"),
        ({"amount": True}, pruneplug.InvalidAmountError, r"got True"),
        ({"amount": 0.5, "threshold": 0}, pruneplug.InvalidParametersError, r"threshold must be a positive number"),
        ({"amount": 0.5, "spread": -0.1}, pruneplug.InvalidParametersError, r"spread must be a number in \[0, 1\]"),
        ({"amount": 0.5, "targets": ["head"]}, pruneplug.InvalidTargetError, r"'head' lies outside the blocks"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, Any], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        pruneplug.owl_amounts(helpers.Stack(depth=2), helpers.feature_batches(), **kwargs)


def test_prune_calibrated_with_owl_allocation_uses_owl_amounts(registry: pruneplug.Registry) -> None:
    registry.register(helpers.NormScaled)
    model = outlier_stack()
    twin = outlier_stack()
    batches = iter(helpers.feature_batches())  # one-shot: needed twice, read into a list
    report = pruneplug.prune_calibrated(model, "calib_norm_scaled", amount=0.5, calibration=batches, allocation="owl")
    amounts = pruneplug.owl_amounts(twin, helpers.feature_batches(), amount=0.5)
    assert {n: layer.amount for n, layer in report.layers.items()} == amounts
    pruneplug.prune_calibrated(twin, "calib_norm_scaled", amount=amounts, calibration=helpers.feature_batches())
    for name, _ in amounts.items():
        assert torch.equal(model.get_submodule(name).weight_mask, twin.get_submodule(name).weight_mask)
    with pytest.raises(pruneplug.InvalidAmountError, match=r"allocation='owl' needs amount as the mean fraction"):
        pruneplug.prune_calibrated(
            helpers.Stack(),
            "calib_norm_scaled",
            amount=amounts,
            calibration=helpers.feature_batches(),
            allocation="owl",
        )


def test_prune_calibrated_passes_owls_threshold_and_spread_on(registry: pruneplug.Registry) -> None:
    registry.register(helpers.NormScaled)
    model = outlier_stack()
    options = {"amount": 0.5, "threshold": 3.0, "spread": 0.2}
    amounts = pruneplug.owl_amounts(outlier_stack(), helpers.feature_batches(), **options)
    assert amounts != pruneplug.owl_amounts(outlier_stack(), helpers.feature_batches(), amount=0.5)  # they matter
    report = pruneplug.prune_calibrated(
        model,
        "calib_norm_scaled",
        amount=0.5,
        calibration=helpers.feature_batches(),
        allocation="owl",
        owl_threshold=3.0,
        owl_spread=0.2,
        progress=False,
    )
    assert {name: layer.amount for name, layer in report.layers.items()} == amounts


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"owl_threshold": 3.0}, r"owl_threshold and owl_spread are used only with allocation='owl'"),
        ({"owl_spread": 0.1, "allocation": "uniform"}, r"used only with allocation='owl'"),
        ({"owl_threshold": 0.0, "allocation": "owl"}, r"owl_threshold must be a positive number, got 0.0"),
        ({"owl_spread": 1.5, "allocation": "owl"}, r"owl_spread must be a number in \[0, 1\], got 1.5"),
    ],
)
def test_owl_options_out_of_place_or_range_are_refused_before_anything_runs(
    registry: pruneplug.Registry, kwargs: dict[str, Any], message: str
) -> None:
    registry.register(helpers.NormScaled)
    model = outlier_stack()
    before = helpers.state_of(model)
    with pytest.raises(pruneplug.InvalidParametersError, match=message) as caught:
        pruneplug.prune_calibrated(
            model, "calib_norm_scaled", amount=0.5, calibration=helpers.feature_batches(), **kwargs
        )
    assert caught.value.strategy == "calib_norm_scaled"
    assert helpers.same(before, helpers.state_of(model))


def test_owl_amounts_equal_the_independent_reference_of_owls_code() -> None:
    """The per-block sparsities of tests/calibration/reference.py (written from OWL's official code, with
    Wanda's own scaler_row) for the same dense model and calibration inputs."""
    spec = importlib.util.spec_from_file_location("calibration_reference", Path(__file__).with_name("reference.py"))
    assert spec is not None and spec.loader is not None
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    model = outlier_stack()
    batches = helpers.feature_batches(count=4, rows=7)
    inputs: dict[nn.Module, list[Tensor]] = {}
    layers = [m for block in model.blocks for m in (block.fc1, block.fc2)]
    with helpers.forward_hooks(layers, lambda m, a, o: inputs.setdefault(m, []).append(a[0].detach())):
        for batch in batches:
            model(batch)
    metrics = [
        [reference.wanda_metric(m.weight.detach(), inputs[m]) for m in (block.fc1, block.fc2)] for block in model.blocks
    ]
    for amount, threshold, spread in ((0.5, 5.0, 0.08), (0.7, 3.0, 0.1)):
        expected = reference.reference_owl_ratios(metrics, sparsity=amount, threshold_m=threshold, lamda=spread)
        amounts = pruneplug.owl_amounts(model, batches, amount=amount, threshold=threshold, spread=spread)
        assert [amounts[f"blocks.{i}.fc1"] for i in range(3)] == pytest.approx(expected, abs=1e-6)
