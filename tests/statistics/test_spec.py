"""The built-in calibration statistics: running means that equal the one-shot formulas, in fp32."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

import pruneplug
from pruneplug.statistics.spec import INPUT_HESSIAN, INPUT_SQ_NORMS, input_dim, input_features

_spec = importlib.util.spec_from_file_location(
    "calibration_helpers", Path(__file__).parents[1] / "calibration" / "helpers.py"
)
assert _spec is not None and _spec.loader is not None
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(0, 7), min_size=1, max_size=5), seed=st.integers(0, 2**16))
def test_batches_of_any_size_give_the_mean_over_all_rows(sizes: list[int], seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    layer = nn.Linear(5, 3)
    batches = [torch.randn(2, n, 5, generator=generator, dtype=torch.float64) for n in sizes]
    norms, hessian = INPUT_SQ_NORMS.create(layer), INPUT_HESSIAN.create(layer)
    for batch in batches:
        norms.add(batch)
        hessian.add(batch)
    rows = torch.cat([b.reshape(-1, 5) for b in batches])
    assert norms.rows == hessian.rows == rows.shape[0]
    if rows.shape[0] == 0:
        assert torch.equal(norms.result(), torch.zeros(5)) and torch.equal(hessian.result(), torch.zeros(5, 5))
        return
    assert norms.result().dtype == hessian.result().dtype == torch.float32
    expected = helpers.exact_statistics(rows)
    torch.testing.assert_close(norms.result(), expected["input_sq_norms"].float())
    torch.testing.assert_close(hessian.result(), expected["input_hessian"].float())


def test_bf16_inputs_are_accumulated_in_fp32() -> None:
    layer = nn.Linear(4, 2).bfloat16()
    norms = INPUT_SQ_NORMS.create(layer)
    x = torch.full((1000, 4), 3.0, dtype=torch.bfloat16)
    for _ in range(3):
        norms.add(x)
    assert norms.result().dtype == torch.float32
    torch.testing.assert_close(norms.result(), torch.full((4,), 9.0))


def test_an_input_of_the_wrong_width_names_the_layer() -> None:
    norms = INPUT_SQ_NORMS.create(nn.Linear(4, 2))
    with pytest.raises(pruneplug.CalibrationError, match=r"Linear: .*its 4 input features, got shape \(3, 5\)"):
        norms.add(torch.ones(3, 5))


def test_layers_that_are_not_linear_are_refused_by_name() -> None:
    with pytest.raises(pruneplug.CalibrationError, match="Conv2d is not one"):
        INPUT_HESSIAN.create(nn.Conv2d(3, 4, 3))


def test_gpt2_conv1d_meets_its_inputs_on_dim_0() -> None:
    from transformers.pytorch_utils import Conv1D

    layer = Conv1D(12, 4)  # nf=12 outputs, nx=4 inputs: weight (4, 12)
    assert input_features(layer) == 4 and input_dim(layer) == 0 and input_dim(nn.Linear(4, 12)) == 1
    pruneplug.prune(layer, "weight", "identity")
    assert input_features(layer) == 4 and input_dim(layer) == 0
