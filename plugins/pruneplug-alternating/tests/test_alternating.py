"""The alternating plugin, tested as installed: found through its entry point, conformant, the tutorial's masks."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator

import pytest
import torch

import pruneplug
from pruneplug.models import LeNet
from pruneplug.testing import StrategyConformance


@pytest.fixture
def registry() -> Iterator[pruneplug.Registry]:
    """A fresh default registry that loads installed plugins, as a user's first call does."""
    with pruneplug.use_registry(pruneplug.Registry(load_entry_points=True)) as fresh:
        yield fresh


class TestAlternatingConformance(StrategyConformance):
    """pruneplug's conformance checks, on the strategy found by name through the entry point."""

    strategy = "alternating"


def test_found_through_the_entry_point(registry: pruneplug.Registry) -> None:
    """The plugin needs no registration code: a fresh registry finds it, with its distribution."""
    spec = registry.get("alternating")
    assert spec.kind == "unstructured" and spec.provider == "alternating"
    assert spec.distribution == "pruneplug-alternating"
    assert spec.version == importlib.metadata.version("pruneplug-alternating")
    plugin = next(p for p in registry.plugins() if p.name == "alternating")
    assert plugin.status == "ok" and plugin.strategies == ["alternating"]
    assert plugin.entry_point == "alternating = pruneplug_alternating.plugin"


def test_the_tutorials_mask(registry: pruneplug.Registry) -> None:
    """On LeNet's fc1 bias, as in the tutorial: the even positions go, the odd ones stay."""
    model = LeNet()
    pruneplug.prune(model.fc1, "bias", "alternating")
    assert model.fc1.bias_mask.tolist() == [False, True] * 60
    assert torch.equal(model.fc1.bias, model.fc1.bias_orig * model.fc1.bias_mask)


def test_pruning_again_halves_what_is_left(registry: pruneplug.Registry) -> None:
    """A second prune masks every other still-unpruned entry: 8 -> 4 -> 2 alive."""
    layer = torch.nn.Linear(8, 1)
    pruneplug.prune(layer, "weight", "alternating")
    assert layer.weight_mask.flatten().tolist() == [False, True] * 4
    pruneplug.prune(layer, "weight", "alternating")
    assert layer.weight_mask.flatten().tolist() == [False, False, False, True] * 2


def test_rejects_parameters_and_importance_scores(registry: pruneplug.Registry) -> None:
    """It takes no parameters and ignores values, and says so before touching the model."""
    layer = torch.nn.Linear(4, 2)
    with pytest.raises(pruneplug.InvalidParametersError, match="unknown parameter 'amount'"):
        pruneplug.prune(layer, "weight", "alternating", amount=0.5)
    with pytest.raises(pruneplug.InvalidParametersError, match="does not use importance scores"):
        pruneplug.prune(layer, "weight", "alternating", importance_scores=torch.ones(2, 4))
    assert not pruneplug.is_pruned(layer)
