"""load_compacted: a freshly built model resized to a compacted checkpoint's shapes, through safetensors."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import pruneplug
from pruneplug.testing import assert_unchanged, snapshot

_spec = importlib.util.spec_from_file_location("compaction_helpers", Path(__file__).with_name("helpers.py"))
assert _spec is not None and _spec.loader is not None
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)


class Net(nn.Module):
    """conv-BN-ReLU, a depthwise conv with multiplier 2, a LayerNorm'd linear head over the flattened map."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 16, 3, padding=1, groups=8)
        self.fc1 = nn.Linear(16 * 2 * 2, 12)
        self.norm = nn.LayerNorm(12)
        self.fc2 = nn.Linear(12, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.dw(F.relu(self.bn(self.conv(x)))))
        out: Tensor = self.fc2(F.gelu(self.norm(self.fc1(torch.flatten(x, 1)))))
        return out


def compacted(tmp_path: Path, *, extra_mask: bool = False) -> tuple[Net, Tensor, Path]:
    """A compacted Net (eval mode) and its safetensors checkpoint."""
    model, x = helpers.randomize_norms(Net()), torch.randn(2, 3, 2, 2)
    model.eval()
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.5, example_inputs=x)
    if extra_mask:
        pruneplug.prune(model.fc1, "weight", "l1_unstructured", amount=0.25)
    pruneplug.compact(model)
    path = pruneplug.save_checkpoint(tmp_path / "net.safetensors", model.state_dict())
    return model, x, path


def test_a_compacted_checkpoint_loads_into_a_fresh_model(tmp_path: Path) -> None:
    model, x, path = compacted(tmp_path)
    fresh = Net()
    assert pruneplug.load_compacted(fresh, pruneplug.load_checkpoint(path).state_dict) is fresh
    fresh.eval()
    assert (fresh.conv.out_channels, fresh.bn.num_features) == (4, 4)
    assert (fresh.dw.in_channels, fresh.dw.out_channels, fresh.dw.groups) == (4, 8, 4)
    assert (fresh.fc1.in_features, fresh.fc1.out_features, fresh.norm.normalized_shape) == (32, 6, (6,))
    assert str(fresh) == str(model)
    assert torch.equal(helpers.run(fresh, (x,))[0], helpers.run(model, (x,))[0])
    assert helpers.pruning_leftovers(fresh) == []


def test_masks_left_in_a_compacted_checkpoint_are_set_up_again(tmp_path: Path) -> None:
    model, x, path = compacted(tmp_path, extra_mask=True)
    assert "fc1.weight_mask" in model.state_dict()
    fresh = pruneplug.load_compacted(Net(), pruneplug.load_checkpoint(path).state_dict)
    fresh.eval()
    assert pruneplug.is_pruned(fresh.fc1)
    assert torch.equal(fresh.fc1.weight_mask, model.fc1.weight_mask)
    assert torch.equal(helpers.run(fresh, (x,))[0], helpers.run(model, (x,))[0])


def test_a_checkpoint_that_does_not_fit_changes_nothing(tmp_path: Path) -> None:
    model, _, _ = compacted(tmp_path)
    state_dict = dict(model.state_dict())
    del state_dict["fc2.bias"]
    fresh = Net()
    before = snapshot(fresh)
    with pytest.raises(pruneplug.CompactionError, match="fc2.bias"):
        pruneplug.load_compacted(fresh, state_dict)
    assert_unchanged(before, fresh)  # the layers resized before the failure are put back
    with pytest.raises(pruneplug.CompactionError, match="mapping"):
        pruneplug.load_compacted(fresh, [("conv.weight", torch.zeros(1))])  # type: ignore[arg-type]
    assert_unchanged(before, fresh)


def test_a_dense_checkpoint_loads_unchanged(tmp_path: Path) -> None:
    source = Net()
    fresh = Net()
    pruneplug.load_compacted(fresh, copy.deepcopy(source.state_dict()))
    assert str(fresh) == str(source)
    for key, value in source.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
