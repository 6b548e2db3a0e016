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


# The data-aware strategies (and magnitude, their baseline) are checked on nn.Linear layers, with
# statistics of random calibration inputs in use (the kit's calibration checks).

N_OF_M_SHAPES = st.tuples(st.integers(1, 4), st.sampled_from([4, 8, 12]))
"""Linear weights whose input dim holds whole groups of 4."""


class TestMagnitude(StrategyConformance):
    strategy = "magnitude"  # compare="tensor", its default
    dtypes = ALL_FLOATS


class TestMagnitudeRows(StrategyConformance):
    """compare="row" declares it (pruneplug.CountsPerRow): the kit counts ``amount`` in each row."""

    strategy = "magnitude"
    params: ClassVar[ParamsLike] = {"compare": "row"}


class TestMagnitudeNM(StrategyConformance):
    strategy = "magnitude"
    params: ClassVar[ParamsLike] = {"keep_n": 2, "of_m": 4, "amount": None}
    shapes = N_OF_M_SHAPES
    invalid_params = ({"keep_n": 4}, {"amount": 0.5})


class TestWanda(StrategyConformance):
    strategy = "wanda"
    params: ClassVar[ParamsLike] = {"compare": "tensor"}
    dtypes = ALL_FLOATS


class TestWandaRows(StrategyConformance):
    strategy = "wanda"  # compare="row", its default
    dtypes = ALL_FLOATS
    invalid_params = ({"compare": "column"},)


class TestWandaNM(StrategyConformance):
    strategy = "wanda"
    params: ClassVar[ParamsLike] = {"keep_n": st.sampled_from([1, 2, 3]), "of_m": 4, "amount": None}
    shapes = N_OF_M_SHAPES
    invalid_params = ({"of_m": 1}, {"keep_n": 4})

    def test_global(self) -> None:
        pytest.skip("N:M is a rule within each group of one tensor: prune_global refuses it")


class TestSparseGPT(StrategyConformance):
    strategy = "sparsegpt"
    params: ClassVar[ParamsLike] = {"block_size": st.sampled_from([1, 2, 128]), "damp": st.sampled_from([0.01, 0.1])}
    dtypes = ALL_FLOATS
    invalid_params = ({"block_size": 0}, {"damp": -0.1})


class TestSparseGPTNM(StrategyConformance):
    strategy = "sparsegpt"
    params: ClassVar[ParamsLike] = {"keep_n": 2, "of_m": 4, "amount": None, "block_size": st.sampled_from([4, 8])}
    shapes = N_OF_M_SHAPES


def test_every_builtin_strategy_has_a_conformance_class(registry: pruneplug.Registry) -> None:
    """Adding a built-in strategy means adding its conformance class here."""
    covered = {cls.strategy for cls in StrategyConformance.__subclasses__() if cls.__module__ == __name__}
    assert covered == set(registry.names())


def test_the_calibration_checks_run_for_the_data_aware_builtins() -> None:
    """wanda and sparsegpt are not skipped by the kit: both get the calibration check, sparsegpt the updates."""
    assert TestWanda.conformance().skip_reason("calibration") is None
    assert TestSparseGPT.conformance().skip_reason("updates") is None
    assert TestWandaRows.conformance().skip_reason("global") is not None  # prune_global refuses compare="row"


@pytest.mark.parametrize("conformance", [TestWandaRows, TestMagnitudeRows])
def test_every_check_that_counts_runs_for_the_row_modes(conformance: type[StrategyConformance]) -> None:
    """compare="row" is counted row by row (pruneplug.CountsPerRow), not skipped: only prune_global refuses it."""
    kit = conformance.conformance()
    assert [check for check in ("mask", "count", "iterative", "rollback") if kit.skip_reason(check)] == []
    assert not [name for name in vars(conformance) if name.startswith("test_")]  # no check overridden by a skip
    assert kit._checks.per_row
