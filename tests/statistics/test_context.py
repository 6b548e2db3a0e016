"""Reading statistics while pruning: found by module, checked, and a clear error when they are missing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pruneplug
from pruneplug.statistics.context import statistics_for


def test_the_innermost_block_is_read_and_nothing_is_left_after_it() -> None:
    layer = nn.Linear(3, 2)
    outer, inner = {"s": torch.ones(3)}, {"s": torch.zeros(3)}
    with pruneplug.using_statistics({layer: outer}):
        with pruneplug.using_statistics({layer: inner}):
            assert statistics_for(layer, ["s"], strategy="x")["s"] is inner["s"]
        assert statistics_for(layer, ["s"], strategy="x")["s"] is outer["s"]
    with pytest.raises(pruneplug.CalibrationRequiredError, match="no statistics are in use"):
        statistics_for(layer, ["s"], strategy="x")


def test_missing_statistics_name_the_strategy_the_statistic_and_the_way_out() -> None:
    layer, other = nn.Linear(3, 2), nn.Linear(3, 2)
    with (
        pruneplug.using_statistics({other: {"input_sq_norms": torch.ones(3)}}),
        pytest.raises(pruneplug.CalibrationRequiredError) as caught,
    ):
        statistics_for(layer, ["input_sq_norms", "input_hessian"], strategy="wanda", tensor="weight")
    message = str(caught.value)
    assert "'wanda' needs the calibration statistics 'input_sq_norms', 'input_hessian'" in message
    assert "none were collected for this module" in message and "prune_calibrated" in message
    assert caught.value.module_type == "Linear" and caught.value.tensor == "weight"
    with pytest.raises(pruneplug.CalibrationRequiredError, match="a bare tensor has none"):
        statistics_for(None, ["input_sq_norms"], strategy="wanda")


def test_a_statistic_of_the_wrong_shape_says_both_shapes() -> None:
    layer = nn.Linear(3, 2)
    with (
        pruneplug.using_statistics({layer: {"input_sq_norms": torch.ones(4)}}),
        pytest.raises(pruneplug.CalibrationError, match=r"has shape \(4,\), but this layer needs \(3,\)"),
    ):
        statistics_for(layer, ["input_sq_norms"], strategy="wanda", shapes={"input_sq_norms": (3,)})


@pytest.mark.parametrize("bad", [[1, 2], {"fc": {"s": torch.ones(1)}}, {nn.Linear(1, 1): torch.ones(1)}])
def test_malformed_statistics_are_refused_when_the_block_opens(bad: object) -> None:
    with (
        pytest.raises(pruneplug.InvalidParametersError, match="statistics must map modules"),
        pruneplug.using_statistics(bad),  # type: ignore[arg-type]
    ):
        pass
