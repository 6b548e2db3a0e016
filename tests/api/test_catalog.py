"""Strategies given to the API as classes (``pruneplug.api.catalog``): a class that cannot be one is named."""

from __future__ import annotations

import pytest
from torch import Tensor, nn

import pruneplug
from pruneplug.testing import assert_unchanged, snapshot


class BadlyNamed(pruneplug.BasePruningMethod):
    PRUNING_TYPE = "unstructured"
    name = "Not A Name"

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        return default_mask


def test_a_class_whose_name_cannot_be_registered_is_an_incompatible_strategy_naming_the_target() -> None:
    layer = nn.Linear(3, 2)
    before = snapshot(layer)
    with pytest.raises(pruneplug.IncompatibleStrategyError, match="lowercase letters") as caught:
        pruneplug.prune(layer, "weight", BadlyNamed)
    assert (caught.value.module_type, caught.value.tensor) == ("Linear", "weight")
    assert_unchanged(before, layer)
