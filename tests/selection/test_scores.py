"""Importance scores: one score, every picking mode (entries, slices, global), plugins included."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pruneplug
from pruneplug.hookspecs import hookimpl


def test_builtin_scores_are_registered(registry: pruneplug.Registry) -> None:
    assert registry.score_names() == ["magnitude", "taylor"]
    assert registry.get_score("magnitude").elementwise
    with pytest.raises(pruneplug.ScoreNotFoundError, match="Did you mean 'taylor'"):
        registry.get_score("taylr")


def test_magnitude_score_matches_l1_in_every_mode(registry: pruneplug.Registry) -> None:
    torch.manual_seed(1)
    a, b = nn.Linear(8, 6), nn.Linear(8, 6)
    b.load_state_dict(a.state_dict())
    pruneplug.prune(a, "weight", "scored_unstructured", amount=0.4)
    pruneplug.prune(b, "weight", "l1_unstructured", amount=0.4)
    assert torch.equal(a.weight_mask, b.weight_mask)
    pruneplug.prune(a, "weight", "scored_structured", amount=2, dim=0, reduce="sum")
    pruneplug.prune(b, "weight", "ln_structured", amount=2, n=1, dim=0)
    assert torch.equal(a.weight_mask, b.weight_mask)
    c, d = nn.Linear(8, 6), nn.Linear(5, 6)
    c2, d2 = nn.Linear(8, 6), nn.Linear(5, 6)
    c2.load_state_dict(c.state_dict())
    d2.load_state_dict(d.state_dict())
    pruneplug.prune_global([(c, "weight"), (d, "weight")], "scored_unstructured", amount=30, score="magnitude")
    pruneplug.prune_global([(c2, "weight"), (d2, "weight")], "l1_unstructured", amount=30)
    assert torch.equal(c.weight_mask, c2.weight_mask) and torch.equal(d.weight_mask, d2.weight_mask)


def test_taylor_score_uses_the_gradient(registry: pruneplug.Registry) -> None:
    layer = nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 1.0, 1.0, 1.0], [2.0, 2.0, 2.0, 2.0], [3.0, 3.0, 3.0, 3.0]]))
    with pytest.raises(pruneplug.InvalidParametersError, match="run a backward pass"):
        pruneplug.prune(layer, "weight", "scored_unstructured", score="taylor", amount=1)
    assert not pruneplug.is_pruned(layer)
    x = torch.tensor([[10.0, 0.1, 1.0, 1.0]])
    layer(x).sum().backward()  # dL/dw[i, j] = x[j]: column 1 matters least
    pruneplug.prune(layer, "weight", "scored_structured", score="taylor", amount=1, dim=1)
    assert layer.weight_mask[:, 1].tolist() == [False] * 3 and bool(layer.weight_mask[:, [0, 2, 3]].all())
    layer.weight_orig.grad = None
    layer(x).sum().backward()  # the gradient now reaches weight_orig (the parameter)
    pruneplug.prune(layer, "weight", "scored_unstructured", score="taylor", amount=2)
    assert int((~layer.weight_mask).sum()) == 3 + 2


def test_unknown_score_is_a_parameter_error(registry: pruneplug.Registry) -> None:
    layer = nn.Linear(3, 3)
    with pytest.raises(pruneplug.InvalidParametersError, match="no importance score named 'magnitud'"):
        pruneplug.prune(layer, "weight", "scored_unstructured", score="magnitud", amount=1)
    with pytest.raises(pruneplug.InvalidParametersError, match="reduce"):
        pruneplug.prune(layer, "weight", "scored_structured", amount=1, dim=0, reduce="median")
    assert not pruneplug.is_pruned(layer)


class _SquarePlugin:
    """A score plugin: the square of each entry, elementwise."""

    @staticmethod
    @hookimpl
    def pruneplug_add_importance_scores() -> list[pruneplug.ImportanceScore]:
        return [pruneplug.ImportanceScore("square", lambda values, target: values * values, elementwise=True)]


def test_a_plugin_score_works_in_every_picking_mode() -> None:
    registry = pruneplug.Registry(load_entry_points=False)
    registry.plugin_manager.register(_SquarePlugin(), name="square-plugin")
    with pruneplug.use_registry(registry):
        assert "square" in registry.score_names()
        assert "square" in next(p for p in registry.plugins() if p.name == "square-plugin").scores
        layer = nn.Linear(6, 4)
        pruneplug.prune(layer, "weight", "scored_unstructured", score="square", amount=5)
        pruneplug.prune(layer, "weight", "scored_structured", score="square", amount=1, dim=0, reduce="l2")
        a, b = nn.Linear(6, 4), nn.Linear(6, 4)
        pruneplug.prune_global([(a, "weight"), (b, "weight")], "scored_unstructured", score="square", amount=0.5)
        assert int((~a.weight_mask).sum() + (~b.weight_mask).sum()) == 24
        assert int((~layer.weight_mask.any(1)).sum()) == 1
