"""What the pipeline holds while it prunes: a layer's statistics until it is pruned, and no freed memory."""

from __future__ import annotations

import importlib.util
import platform
import sys
import weakref
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import pruneplug
from pruneplug.calibration import driver, memory
from pruneplug.calibration.collect import Collector

_spec = importlib.util.spec_from_file_location("calibration_helpers", Path(__file__).with_name("helpers.py"))
assert _spec is not None and _spec.loader is not None
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)


@pytest.mark.parametrize("sequential", [True, False])
def test_a_layers_statistics_are_let_go_once_it_is_pruned(sequential: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A block's Hessians are held together only until each layer is pruned: the widest layer's working memory
    must not come on top of all of them (the memory target on a 1.1 B LLaMA)."""
    hessians: dict[str, weakref.ref[Tensor]] = {}
    alive_at_prune: dict[str, list[str]] = {}
    real_results, real_prune = Collector.results, driver._Run.prune

    def results(self: Collector) -> dict[nn.Module, dict[str, Tensor]]:
        found = real_results(self)
        for target in self.targets:
            hessians[target.name] = weakref.ref(found[target.module]["input_hessian"])
        return found

    def prune(self: driver._Run, target: driver.Target, stats: dict[str, Tensor] | None) -> None:
        alive_at_prune[target.name] = sorted(name for name, ref in hessians.items() if ref() is not None)
        real_prune(self, target, stats)

    monkeypatch.setattr(Collector, "results", results)
    monkeypatch.setattr(driver._Run, "prune", prune)
    torch.manual_seed(0)
    model = helpers.Stack(depth=2)
    pruneplug.prune_calibrated(
        model, "sparsegpt", amount=0.5, calibration=helpers.feature_batches(count=2, rows=12), sequential=sequential
    )
    if sequential:  # one block's statistics at a time, each layer's gone once pruned
        assert alive_at_prune == {
            "blocks.0.fc1": ["blocks.0.fc1", "blocks.0.fc2"],
            "blocks.0.fc2": ["blocks.0.fc2"],
            "blocks.1.fc1": ["blocks.1.fc1", "blocks.1.fc2"],
            "blocks.1.fc2": ["blocks.1.fc2"],
        }
    else:
        names = list(alive_at_prune)
        assert [alive_at_prune[name] for name in names] == [sorted(names[index:]) for index in range(len(names))]
    assert not any(ref() is not None for ref in hessians.values())


def test_freed_memory_is_given_back_after_the_forward_and_after_each_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(driver, "release_freed_memory", lambda: calls.append(1) or True)
    torch.manual_seed(0)
    model = helpers.Stack(depth=2)
    pruneplug.prune_calibrated(model, "wanda", amount=0.5, calibration=helpers.feature_batches(count=2, rows=12))
    assert len(calls) == 2 * (1 + 2)  # per block: after its forward, and after each of its 2 layers


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc's malloc_trim"
)
def test_glibc_is_asked_to_give_back_its_free_memory() -> None:
    assert memory.release_freed_memory() is True


def test_elsewhere_nothing_is_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    memory._malloc_trim.cache_clear()
    try:
        assert memory.release_freed_memory() is False
    finally:
        memory._malloc_trim.cache_clear()
