"""pruneplug's own strategies through the conformance kit it gives plugin authors.

One ``StrategyConformance`` subclass per built-in strategy; a guard test fails
when a built-in is added without one.
"""

from __future__ import annotations

import math
from typing import ClassVar

import pytest
import torch
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

import pruneplug
from pruneplug.testing import ParamsLike, Shape, StrategyConformance

ALL_FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


@pytest.fixture(autouse=True)
def _builtins_only(registry: pruneplug.Registry) -> None:
    """Names resolve in a registry of built-ins only (no installed plugin can interfere)."""


def masks_of(shape: Shape) -> SearchStrategy[dict[str, torch.Tensor]]:
    """``custom_from_mask``'s parameter: a random 0/1 mask of the tensor's shape, bool or float."""
    seeds = st.integers(0, 2**31 - 1)
    bools = seeds.map(lambda s: torch.rand(shape, generator=torch.Generator().manual_seed(s)) < 0.6)
    return st.fixed_dictionaries({"mask": st.one_of(bools, bools.map(lambda m: m.to(torch.float32)))})


class TestIdentity(StrategyConformance):
    strategy = "identity"


class TestL1Unstructured(StrategyConformance):
    strategy = "l1_unstructured"
    dtypes = ALL_FLOATS


class TestRandomUnstructured(StrategyConformance):
    strategy = "random_unstructured"
    dtypes = ALL_FLOATS


class TestRandomStructured(StrategyConformance):
    strategy = "random_structured"


class TestLnStructured(StrategyConformance):
    strategy = "ln_structured"
    params: ClassVar[ParamsLike] = {"n": st.sampled_from([1, 2, 3, 0, math.inf, -math.inf, "fro"])}
    dtypes = (torch.float32, torch.float64)
    invalid_params = ({"n": "l2"},)


class TestCustomFromMask(StrategyConformance):
    strategy = "custom_from_mask"
    params = masks_of
    invalid_params = ({"mask": torch.ones(7, 7, 7)},)


class TestScoredUnstructured(StrategyConformance):
    strategy = "scored_unstructured"
    params: ClassVar[ParamsLike] = {"score": "magnitude"}
    invalid_params = ({"score": "no_such_score"},)


class TestScoredStructured(StrategyConformance):
    strategy = "scored_structured"
    params: ClassVar[ParamsLike] = {"score": "magnitude", "reduce": st.sampled_from(["sum", "mean", "max", "l2"])}


class TestMagnitude(StrategyConformance):
    strategy = "magnitude"  # compare="tensor", its default: "row" and N:M count per row and per group
    dtypes = ALL_FLOATS


#: Built-ins that read calibration statistics of the module they prune: the kit's checks prune a bare
#: holder module with no statistics, so they are checked in tests/strategies/test_calibrated.py instead.
NEEDS_CALIBRATION = {"wanda", "sparsegpt"}


def test_every_builtin_strategy_has_a_conformance_class(registry: pruneplug.Registry) -> None:
    """Adding a built-in strategy means adding its conformance class here."""
    covered = {cls.strategy for cls in StrategyConformance.__subclasses__() if cls.__module__ == __name__}
    assert covered | NEEDS_CALIBRATION == set(registry.names())
