"""Strategies that protect entries (``protected``) or slices (``protected_slices``) from pruning.

Protected entries are never selected -- locally, iteratively, globally, with
importance scores -- and an ``amount`` that would need them is an
InvalidAmountError that leaves the model as it was.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from torch import Tensor

import pruneplug
from pruneplug.testing import assert_unchanged, snapshot

_spec = importlib.util.spec_from_file_location(
    "diagonal_plugin", Path(__file__).parents[1] / "testing" / "diagonal_plugin.py"
)
assert _spec is not None and _spec.loader is not None
diagonal_plugin = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(diagonal_plugin)
KeepDiagonal = diagonal_plugin.KeepDiagonal


@pytest.fixture(autouse=True)
def _builtins_only(registry: pruneplug.Registry) -> Iterator[None]:
    with pruneplug.registered(KeepDiagonal):
        yield


def _square(n: int) -> torch.nn.Linear:
    """An n x n layer whose diagonal holds the smallest magnitudes (an unprotected selection takes it first)."""
    layer = torch.nn.Linear(n, n, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.arange(1.0, n * n + 1).reshape(n, n) * ~_diagonal(n))
    return layer


def _diagonal(n: int) -> Tensor:
    return torch.eye(n, dtype=torch.bool)


def test_local_pruning_never_selects_a_protected_entry() -> None:
    layer = _square(3)
    pruneplug.prune(layer, "weight", "keep_diagonal", amount=6)
    assert layer.weight_mask.tolist() == _diagonal(3).tolist()


def test_a_fraction_counts_over_every_unpruned_entry_as_in_torch() -> None:
    """0.5 of 9 entries is round(4.5) = 4, whatever is protected (so a result matches torch's count)."""
    layer = _square(3)
    pruneplug.prune(layer, "weight", "keep_diagonal", amount=0.5)
    assert int((~layer.weight_mask).sum()) == 4
    assert bool(layer.weight_mask[_diagonal(3)].all())


def test_iterative_pruning_keeps_protected_entries_and_counts_what_is_left() -> None:
    layer = _square(4)
    pruneplug.prune(layer, "weight", "keep_diagonal", amount=5)
    pruneplug.prune(layer, "weight", "keep_diagonal", amount=0.5)  # 0.5 of the 11 left: 6 of the 7 prunable
    assert int(layer.weight_mask.sum()) == 5
    assert bool(layer.weight_mask[_diagonal(4)].all())
    with pytest.raises(pruneplug.InvalidAmountError, match="at most 1 may be pruned"):
        pruneplug.prune(layer, "weight", "keep_diagonal", amount=2)


def test_importance_scores_are_what_protected_sees() -> None:
    layer = _square(2)
    scores = torch.zeros(2, 2)
    pruneplug.prune(layer, "weight", "keep_diagonal", amount=2, importance_scores=scores)
    assert layer.weight_mask.tolist() == [[True, False], [False, True]]


@pytest.mark.parametrize("amount", [1.0, 0.9, 9, 7])
def test_an_amount_over_what_may_be_pruned_is_refused_and_changes_nothing(amount: int | float) -> None:
    layer = _square(3)
    before = snapshot(layer)
    with pytest.raises(pruneplug.InvalidAmountError) as caught:
        pruneplug.prune(layer, "weight", "keep_diagonal", amount=amount)
    message = str(caught.value)
    assert "strategy 'keep_diagonal'" in message and "Linear.weight" in message
    assert "of the 9 unpruned entries" in message and "protects 3 of them: at most 6 may be pruned" in message
    assert_unchanged(before, layer)


def test_the_issue_example_global_amount_over_what_may_be_pruned() -> None:
    """prune_global([2x2, 3x3], diagonal-protecting, amount=1.0): 13 unpruned, 5 protected: an error, no change."""
    small, large = _square(2), _square(3)
    before = snapshot(small), snapshot(large)
    with pytest.raises(pruneplug.InvalidAmountError, match=r"13 of the 13 unpruned entries.*protects 5.*at most 8"):
        pruneplug.prune_global([(small, "weight"), (large, "weight")], "keep_diagonal", amount=1.0)
    assert_unchanged(before[0], small)
    assert_unchanged(before[1], large)


@pytest.mark.parametrize("storage", ["bool", "packed"])
def test_global_pruning_leaves_every_protected_entry(storage: str) -> None:
    small, large = _square(2), _square(3)
    pruneplug.prune(
        large,
        "weight",
        "custom_from_mask",
        mask=~torch.tensor([[0, 1, 0], [0, 0, 0], [0, 0, 0]]).bool(),
        mask_storage=storage,
    )
    targets = [(small, "weight"), (large, "weight")]
    pruneplug.prune_global(targets, "keep_diagonal", amount=7)  # every prunable entry left: 2 + 5
    assert small.weight_mask.tolist() == _diagonal(2).tolist()
    assert torch.equal(
        pruneplug.unpack_masks(large).weight_mask if storage == "packed" else large.weight_mask, _diagonal(3)
    )


def test_global_fraction_counts_over_all_unpruned_entries() -> None:
    small, large = _square(2), _square(3)
    pruneplug.prune_global([(small, "weight"), (large, "weight")], "keep_diagonal", amount=0.5)  # round(6.5) = 6
    assert int((~small.weight_mask).sum() + (~large.weight_mask).sum()) == 6
    assert bool(small.weight_mask[_diagonal(2)].all()) and bool(large.weight_mask[_diagonal(3)].all())


class NeverFirstRow(pruneplug.StructuredStrategy):
    """Prunes rows by L1 norm but never row 0 along dim 0."""

    name: ClassVar[str | None] = "never_first_row"

    def slice_scores(self, t: Tensor, dim: int, alive: Tensor | None) -> Tensor:
        return t.abs().sum(dim=[d for d in range(t.dim()) if d != dim])

    def protected_slices(self, t: Tensor, dim: int) -> Tensor | None:
        guard = torch.zeros(t.shape[dim], dtype=torch.bool, device=t.device)
        guard[0] = True
        return guard


def test_structured_protection_keeps_the_slice_and_refuses_too_much() -> None:
    layer = torch.nn.Linear(3, 4, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.arange(12.0).reshape(4, 3))  # row 0 has the smallest norm
    with pruneplug.registered(NeverFirstRow):
        pruneplug.prune(layer, "weight", "never_first_row", amount=2, dim=0)
        assert layer.weight_mask.all(dim=1).tolist() == [True, False, False, True]
        with pytest.raises(
            pruneplug.InvalidAmountError, match=r"2 of the 2 unpruned slices along dim 0.*protects 1.*at most 1"
        ):
            pruneplug.prune(layer, "weight", "never_first_row", amount=1.0, dim=0)
        pruneplug.prune(layer, "weight", "never_first_row", amount=1, dim=0)
    assert layer.weight_mask.all(dim=1).tolist() == [True, False, False, False]


class BadGuard(KeepDiagonal):
    name: ClassVar[str | None] = "bad_guard"
    guard: ClassVar[object] = None

    def protected(self, t: Tensor) -> Tensor | None:
        return type(self).guard  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("guard", "got"),
    [
        (torch.zeros(3, 3), "a torch.float32 tensor of shape (3, 3)"),
        (torch.zeros(9, dtype=torch.bool), "a torch.bool tensor of shape (9,)"),
        ([[True]], "list"),
    ],
)
def test_a_malformed_protected_mask_is_an_invalid_mask_error(guard: object, got: str) -> None:
    layer = _square(3)
    BadGuard.guard = guard
    with pruneplug.registered(BadGuard), pytest.raises(pruneplug.InvalidMaskError) as caught:
        pruneplug.prune(layer, "weight", "bad_guard", amount=1)
    assert "strategy 'bad_guard'" in str(caught.value)
    assert f"protected(t) returned {got}" in str(caught.value)
    assert "it must return None or a torch.bool tensor of shape (3, 3) on cpu" in str(caught.value)
    assert not pruneplug.is_pruned(layer)


class TopOfRow(pruneplug.UnstructuredStrategy):
    """Protects each row's largest magnitude; scores the whole tensor (not elementwise)."""

    name: ClassVar[str | None] = "top_of_row"

    def scores(self, t: Tensor, alive: Tensor | None) -> Tensor:
        return t.abs()

    def protected(self, t: Tensor) -> Tensor | None:
        return torch.zeros(t.shape, dtype=torch.bool).scatter_(1, t.abs().argmax(1, keepdim=True), True)


def test_global_protection_sees_what_the_strategy_ranks_as_local_pruning_does() -> None:
    # The 9 and the 8 are pruned already: what is ranked (and protected) is orig * mask, not orig.
    def pruned_layer() -> torch.nn.Linear:
        layer = torch.nn.Linear(4, 2, bias=False)
        with torch.no_grad():
            layer.weight.copy_(torch.tensor([[9.0, 1.0, 2.0, 3.0], [8.0, 1.0, 5.0, 4.0]]))
        pruneplug.prune(layer, "weight", "custom_from_mask", mask=torch.tensor([[0, 1, 1, 1], [0, 1, 1, 1]]).bool())
        return layer

    local, across = pruned_layer(), pruned_layer()
    pruneplug.prune(local, "weight", TopOfRow, amount=4)
    pruneplug.prune_global([(across, "weight")], TopOfRow, amount=4)
    assert local.weight_mask.tolist() == [[False, False, False, True], [False, False, True, False]]
    assert torch.equal(across.weight_mask, local.weight_mask)


class DiagonalOwnMask(KeepDiagonal):
    name: ClassVar[str | None] = "diagonal_own_mask"

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        return super().compute_mask(t, default_mask)


def test_global_pruning_refuses_a_protecting_strategy_that_computes_its_own_masks() -> None:
    layers = [_square(4), _square(4)]
    with pytest.raises(pruneplug.IncompatibleStrategyError, match="protected\\(\\) cannot be honoured"):
        pruneplug.prune_global([(layer, "weight") for layer in layers], DiagonalOwnMask, amount=8)
    assert not any(pruneplug.is_pruned(layer) for layer in layers)
