"""Strategies that update the values they keep (UpdatesValues): in <name>_orig, kept by remove, undone on failure."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from torch import Tensor, nn

import pruneplug
from pruneplug.core.commit import commit
from pruneplug.core.method import with_history
from pruneplug.core.plan import plan_prune


class HalveAndKeepRows(pruneplug.BasePruningMethod):
    """Prunes row 0 and halves the other entries: a stand-in for an OBS update."""

    PRUNING_TYPE: ClassVar[str] = "global"
    name: ClassVar[str | None] = "halve_rows"

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        return self.prune_and_update(t, None)[0] & default_mask.bool()

    def prune_and_update(self, t: Tensor, alive: Tensor | None) -> tuple[Tensor, Tensor]:
        keep = torch.ones_like(t, dtype=torch.bool)
        keep[0] = False
        if alive is not None:
            keep &= alive
        return keep, (t * keep) / 2


def test_the_update_lands_in_orig_in_place_and_remove_keeps_it() -> None:
    layer = nn.Linear(3, 4)
    parameter, before = layer.weight, layer.weight.detach().clone()
    assert isinstance(HalveAndKeepRows(), pruneplug.UpdatesValues)
    pruneplug.prune(layer, "weight", HalveAndKeepRows)
    assert layer.weight_orig is parameter
    torch.testing.assert_close(layer.weight_orig[1:], before[1:] / 2)
    assert torch.equal(layer.weight_mask[0], torch.zeros(3, dtype=torch.bool))
    pruneplug.remove(layer, "weight")
    assert layer.weight is parameter
    torch.testing.assert_close(layer.weight[1:], before[1:] / 2)
    assert torch.equal(layer.weight[0], torch.zeros(3))


def test_the_masked_weight_read_after_the_update_is_fresh() -> None:
    layer = nn.Linear(3, 4).eval()
    x = torch.randn(2, 3)
    with torch.no_grad():
        layer(x)
        pruneplug.prune(layer, "weight", "identity")
        layer(x)  # the cache holds weight_orig * mask now
        pruneplug.prune(layer, "weight", HalveAndKeepRows)
        expected = x @ (layer.weight_orig * layer.weight_mask).T + layer.bias
        torch.testing.assert_close(layer(x), expected)


class BadValues(HalveAndKeepRows):
    name: ClassVar[str | None] = "bad_values"

    def __init__(self, values: str) -> None:
        self.values = values

    def prune_and_update(self, t: Tensor, alive: Tensor | None) -> tuple[Tensor, Tensor]:
        keep, values = super().prune_and_update(t, alive)
        if self.values == "nan":
            values[1, 1] = float("nan")
            return keep, values
        return keep, values.double()


@pytest.mark.parametrize(("values", "message"), [("nan", "not all finite"), ("double", "torch.float64")])
def test_bad_values_are_refused_and_nothing_changes(values: str, message: str) -> None:
    layer = nn.Linear(3, 4)
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    with pytest.raises(pruneplug.InvalidMaskError, match=message):
        pruneplug.prune(layer, "weight", BadValues(values))
    assert not pruneplug.is_pruned(layer)
    assert all(torch.equal(v, state[k]) for k, v in layer.state_dict().items())


def test_a_failure_writing_the_second_update_restores_the_first(monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = nn.Linear(3, 4), nn.Linear(3, 4)
    pruneplug.prune(first, "weight", "l1_unstructured", amount=2)
    before = [first.weight_orig.detach().clone(), second.weight.detach().clone()]
    pendings = [plan_prune(m, "weight", HalveAndKeepRows(), stack=with_history) for m in (first, second)]
    real, calls = torch.Tensor.copy_, []

    def fail_on_the_second_write(self: Tensor, other: Tensor, non_blocking: bool = False) -> Tensor:
        calls.append(self)
        if len(calls) == 2:
            raise RuntimeError("disk on fire")
        return real(self, other, non_blocking)

    monkeypatch.setattr(torch.Tensor, "copy_", fail_on_the_second_write)
    with pytest.raises(RuntimeError, match="disk on fire"):
        commit(pendings)
    monkeypatch.undo()
    assert torch.equal(first.weight_orig, before[0]) and torch.equal(second.weight, before[1])
    assert [type(m).__name__ for m in pruneplug.pruning_history(first, "weight")] == ["L1Unstructured"]
    assert not pruneplug.is_pruned(second)
