"""The rollback of a calibrated prune: the old values of updated weights wait in a temporary file, not in memory."""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import torch
from torch import nn

import pruneplug
from pruneplug.calibration.state import Rollback

_spec = importlib.util.spec_from_file_location("calibration_helpers", Path(__file__).with_name("helpers.py"))
assert _spec is not None and _spec.loader is not None
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)


@pytest.fixture(autouse=True)
def _strategies(registry: pruneplug.Registry) -> Iterator[None]:
    registry.register(helpers.HalvesKept)
    helpers.HalvesKept.FAILING.clear()
    yield
    helpers.HalvesKept.FAILING.clear()


def _layers() -> list[nn.Module]:
    """An fp32 layer, a bfloat16 one (no numpy dtype), and one whose weight is not contiguous."""
    transposed = nn.Linear(6, 4)
    transposed.weight = nn.Parameter(torch.randn(6, 4).t())
    assert not transposed.weight.is_contiguous()
    return [nn.Linear(8, 5), nn.Linear(5, 3).to(torch.bfloat16), transposed]


def _change_and_restore(rollback: Rollback, layers: list[nn.Module]) -> None:
    before = [(layer.weight, layer.weight.detach().clone(), layer.weight.stride()) for layer in layers]
    with torch.no_grad():
        for layer in layers:
            layer.weight.mul_(0.5).add_(1.0)
    rollback.restore()
    for layer, (weight, values, stride) in zip(layers, before):
        assert layer.weight is weight and weight.stride() == stride
        assert weight.dtype == values.dtype and torch.equal(weight, values)


def test_old_values_go_to_a_temporary_file_and_come_back_exactly() -> None:
    layers = _layers()
    rollback = Rollback(layers)
    for layer in [*layers, layers[0]]:  # each weight once
        rollback.keep_values(layer)
    assert rollback.held_bytes == 0
    assert rollback.filed_bytes == sum(layer.weight.numel() * layer.weight.element_size() for layer in layers)
    _change_and_restore(rollback, layers)
    rollback.close()
    rollback.close()  # twice is fine


def test_where_the_file_cannot_be_written_the_old_values_stay_in_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    real = tempfile.TemporaryFile

    class FullDisk:
        """A temporary file that takes one write, then reports a full disk."""

        def __init__(self) -> None:
            self.file: IO[bytes] = real()
            self.writes = 0

        def write(self, data: Any) -> int:
            self.writes += 1
            if self.writes > 1:
                raise OSError(28, "No space left on device")
            return self.file.write(data)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.file, name)

    monkeypatch.setattr(tempfile, "TemporaryFile", lambda *args, **kwargs: FullDisk())
    layers = _layers()
    rollback = Rollback(layers)
    for layer in layers:
        rollback.keep_values(layer)
    first = layers[0].weight
    assert rollback.filed_bytes == first.numel() * first.element_size()
    assert rollback.held_bytes == sum(layer.weight.numel() * layer.weight.element_size() for layer in layers[1:])
    _change_and_restore(rollback, layers)

    def refused(*args: Any, **kwargs: Any) -> IO[bytes]:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refused)
    rollback = Rollback(layers)
    for layer in layers:
        rollback.keep_values(layer)
    assert rollback.filed_bytes == 0
    _change_and_restore(rollback, layers)


@pytest.mark.parametrize("fails", [False, True])
def test_prune_calibrated_deletes_its_rollback_file_whatever_happens(
    monkeypatch: pytest.MonkeyPatch, fails: bool
) -> None:
    opened: list[IO[bytes]] = []
    real = tempfile.TemporaryFile

    def recorded(*args: Any, **kwargs: Any) -> IO[bytes]:
        opened.append(real(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(tempfile, "TemporaryFile", recorded)
    model = helpers.Stack(depth=3)
    before = helpers.state_of(model)
    if fails:
        helpers.HalvesKept.FAILING.add(id(model.blocks[2].fc1))
        with pytest.raises(pruneplug.StrategyFailedError, match="told to fail"):
            pruneplug.prune_calibrated(model, "calib_halves_kept", amount=0.5, calibration=helpers.feature_batches())
        assert helpers.same(before, helpers.state_of(model))
    else:
        pruneplug.prune_calibrated(model, "calib_halves_kept", amount=0.5, calibration=helpers.feature_batches())
        assert pruneplug.is_pruned(model.blocks[2].fc2)
    assert len(opened) == 1 and opened[0].closed
