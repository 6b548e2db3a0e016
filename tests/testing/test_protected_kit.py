"""The conformance kit on a strategy that protects entries: it draws only valid amounts, and catches broken protection.

The fixture plugin (``diagonal_plugin.py``) is written from docs/plugins.md.
Each of its copies below has its own derandomized hypothesis seed (the seed
follows the strategy's name), so the kit is run on several example sequences,
the same on every run.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import strategies as st

import pruneplug
from pruneplug.testing import CHECKS, ConformanceError, StrategyConformance, check_strategy

_spec = importlib.util.spec_from_file_location("diagonal_plugin", Path(__file__).with_name("diagonal_plugin.py"))
assert _spec is not None and _spec.loader is not None
diagonal_plugin = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(diagonal_plugin)

SEEDS = 3  # copies of the strategy, each drawing its own examples
SQUARE = st.integers(1, 5).flatmap(lambda n: st.tuples(st.just(n), st.integers(max(1, n - 1), n + 1)))


@pytest.fixture(autouse=True)
def _plugin(registry: pruneplug.Registry) -> Iterator[None]:
    """The fixture plugin's strategies (what its hook hands over) in a fresh registry."""
    for strategy in diagonal_plugin.pruneplug_add_strategies():
        registry.register(strategy)
    yield


def _copy(index: int) -> type:
    return type(f"KeepDiagonal{index}", (diagonal_plugin.KeepDiagonal,), {"name": f"keep_diagonal_{index}"})


@pytest.mark.parametrize("index", range(SEEDS))
def test_a_protecting_strategy_passes_every_check(index: int) -> None:
    assert check_strategy(_copy(index), max_examples=20).passed == CHECKS


@pytest.mark.parametrize("index", range(SEEDS))
def test_it_passes_on_shapes_where_the_diagonal_is_most_of_the_tensor(index: int) -> None:
    assert check_strategy(_copy(index), shapes=SQUARE, max_examples=20).passed == CHECKS


class TestKeepDiagonalConformance(StrategyConformance):
    """The pytest form, with the strategy found by its registered name (through the plugin's hook)."""

    strategy = "keep_diagonal"


@pytest.mark.parametrize("check", ["count", "iterative", "rollback", "global"])
def test_a_strategy_that_prunes_what_it_protects_fails(check: str) -> None:
    with pytest.raises(ConformanceError) as caught:
        check_strategy("claims_diagonal", checks=[check], shapes=SQUARE, max_examples=30)
    message = caught.value.failures[check]
    pruned = "that protected(t) declares protected; they must never be pruned" in message
    not_refused = "more than may be pruned" in message and "succeeded" in message
    # prune_global refuses a protecting strategy with its own compute_mask outright (it cannot honour protection)
    refused_globally = "raised IncompatibleStrategyError" in message and "cannot be honoured" in message
    assert {"rollback": not_refused, "global": pruned or not_refused or refused_globally}.get(check, pruned), message
