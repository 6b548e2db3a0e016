"""compact: the pruned channels removed for real, checked against the masked model, or nothing changed at all."""

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


class MLP(nn.Module):
    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 32)
        self.fc2 = nn.Linear(32, 16)
        self.drop = nn.Dropout(dropout)
        self.fc3 = nn.Linear(16, 2)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.fc3(self.drop(F.relu(self.fc2(F.relu(self.fc1(x))))))
        return out


class FixedWidth(nn.Module):
    """A forward that spells out the width of its flatten: ``x.view(x.size(0), 16 * 4 * 4)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.conv2(F.relu(self.bn(self.conv1(x)))))
        out: Tensor = self.fc(x.view(x.size(0), 16 * 4 * 4))
        return out


class ReadsItsWidth(nn.Module):
    """A forward that divides by a layer's width: the compacted layer divides by another number."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 16)
        self.fc2 = nn.Linear(16, 2)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.fc2(F.relu(self.fc1(x)) / self.fc1.out_features)
        return out


# -- the report ------------------------------------------------------------------------------------


def test_the_report_adds_up() -> None:
    model, x = MLP(), torch.randn(3, 4)
    dense_macs = pruneplug.count_macs(model, (x,))
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.5, example_inputs=x)
    report = pruneplug.compact(model)
    assert (model.fc1.out_features, model.fc2.out_features) == (16, 8)
    assert report.groups_compacted == len(report.channels_removed) == 2
    assert sorted(report.channels_removed.values()) == [8, 16]
    assert report.total_channels_removed == (32 - 16) + (16 - 8)
    assert report.params_before == 4 * 32 + 32 + 32 * 16 + 16 + 16 * 2 + 2
    assert report.params_after == pruneplug.count_params(model) == 4 * 16 + 16 + 16 * 8 + 8 + 8 * 2 + 2
    assert report.macs_before == dense_macs == 3 * (4 * 32 + 32 * 16 + 16 * 2)
    assert report.macs_after == pruneplug.count_macs(model, (x,)) == 3 * (4 * 16 + 16 * 8 + 8 * 2)
    assert 0 <= report.max_abs_diff <= report.tolerance
    assert report.verified_modes == ("eval", "train")  # the model was training, without dropout
    assert report.tracer == "fx"  # torch.fx reads this model; see test_graph for the eager recorder


def test_train_mode_is_not_compared_with_active_dropout() -> None:
    model, x = MLP(dropout=0.5), torch.randn(3, 4)
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.5, example_inputs=x)
    assert pruneplug.compact(model).verified_modes == ("eval",)


def test_parameters_stay_the_same_objects() -> None:
    model, x = MLP(), torch.randn(3, 4)
    before = {id(p) for p in model.parameters()}
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.5, example_inputs=x)
    pruneplug.compact(model)
    assert {id(p) for p in model.parameters()} == before  # .data replaced: a parameter list stays valid
    assert all(p.requires_grad for p in model.parameters())


def test_gradients_are_sliced_with_their_parameters_so_training_goes_on() -> None:
    model, x = MLP(), torch.randn(3, 4)
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.5, example_inputs=x)
    model(x).square().sum().backward()
    kept = model.fc1.weight_mask.any(1)
    grad = model.fc1.weight_orig.grad
    assert grad is not None
    expected = grad[kept].clone()
    pruneplug.compact(model)
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.shape == parameter.shape, name
    assert torch.equal(model.fc1.weight.grad, expected)
    model(x).square().sum().backward()  # accumulates into the sliced gradients
    torch.optim.SGD(model.parameters(), lr=0.1).step()


def test_a_train_mode_batchnorm_updates_its_kept_statistics_as_the_masked_one_does() -> None:
    model = helpers.randomize_norms(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 2, 1)))
    x = torch.randn(4, 3, 6, 6)
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.5, example_inputs=x)
    kept = model[0].weight_mask.flatten(1).any(1)
    masked = copy.deepcopy(model)
    pruneplug.compact(model)
    with torch.no_grad():
        helpers.assert_matches([masked(x)], [model(x)], what="train outputs")
    assert int(model[1].num_batches_tracked) == int(masked[1].num_batches_tracked) == 1
    for name in ("running_mean", "running_var"):
        helpers.assert_matches([getattr(masked[1], name)[kept]], [getattr(model[1], name)], what=name)


def test_leftover_unstructured_masks_are_sliced_and_kept() -> None:
    model, x = MLP(), torch.randn(3, 4)
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.5, example_inputs=x)
    pruneplug.prune(model.fc2, "weight", "l1_unstructured", amount=0.5)  # on top: half of every weight
    zeros = int((model.fc2.weight == 0).sum())
    masked = copy.deepcopy(model)
    pruneplug.compact(model)
    assert tuple(model.fc2.weight_mask.shape) == (8, 16) == tuple(model.fc2.weight_orig.shape)
    assert int((~model.fc2.weight_mask).sum()) == zeros - (32 * 16 - 16 * 8)  # the zeros inside kept channels
    assert "weight_mask" not in model.fc1._buffers  # all kept: plain again
    helpers.masked_and_compacted_agree(masked, model, (x,))


# -- other ways in ---------------------------------------------------------------------------------


def test_compact_needs_example_inputs_for_a_model_prune_channels_did_not_prune() -> None:
    model, x = MLP(), torch.randn(3, 4)
    rows = torch.ones(32, 4, dtype=torch.bool)
    rows[::2] = False
    pruneplug.prune(model.fc1, "weight", "custom_from_mask", mask=rows)
    pruneplug.prune(model.fc1, "bias", "custom_from_mask", mask=rows[:, 0].clone())
    pruneplug.prune(model.fc2, "weight", "custom_from_mask", mask=rows[:, 0].expand(16, 32).clone())
    before = snapshot(model)
    with pytest.raises(pruneplug.CompactionError, match="example_inputs"):
        pruneplug.compact(model)
    assert_unchanged(before, model)
    masked = copy.deepcopy(model)
    report = pruneplug.compact(model, x)  # the channels are masked in every coupled tensor: they go
    assert report.groups_compacted == 1 and model.fc1.out_features == 16
    helpers.masked_and_compacted_agree(masked, model, (x,))


def test_channels_masked_in_only_some_of_their_tensors_stay() -> None:
    model, x = MLP(), torch.randn(3, 4)
    rows = torch.ones(32, 4, dtype=torch.bool)
    rows[::2] = False
    pruneplug.prune(model.fc1, "weight", "custom_from_mask", mask=rows)  # the bias and fc2 still read them
    report = pruneplug.compact(model, x)
    assert report.groups_compacted == 0 and model.fc1.out_features == 32


# -- rollback --------------------------------------------------------------------------------------


def test_a_forward_with_a_hard_coded_width_is_refused_and_the_model_is_left_as_it_was() -> None:
    model, x = helpers.randomize_norms(FixedWidth()), torch.randn(2, 3, 8, 8)
    model.train()
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.5, example_inputs=x)
    model(x).sum().backward()  # gradients too are put back
    outputs = helpers.run(model, (x,))
    before = snapshot(model)
    with pytest.raises(pruneplug.CompactionError, match="fails on example_inputs"):
        pruneplug.compact(model)
    assert_unchanged(before, model)
    assert torch.equal(helpers.run(model, (x,))[0], outputs[0])


def test_a_forward_that_computes_something_else_once_compacted_is_refused() -> None:
    model, x = ReadsItsWidth(), torch.randn(3, 4)
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.5, example_inputs=x)
    before = snapshot(model)
    with pytest.raises(pruneplug.CompactionError, match="does not compute what the masked one did"):
        pruneplug.compact(model)
    assert_unchanged(before, model)


# -- attention -------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Linear in, a residual self-attention block, a residual MLP, linear out."""

    def __init__(self, batch_first: bool) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 16)
        self.attn = nn.MultiheadAttention(16, 4, batch_first=batch_first)
        self.fc1 = nn.Linear(16, 24)
        self.fc2 = nn.Linear(24, 16)
        self.out = nn.Linear(16, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = self.inp(x)
        h = h + self.attn(h, h, h, need_weights=False)[0]
        h = h + self.fc2(F.gelu(self.fc1(h)))
        out: Tensor = self.out(h)
        return out


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_compacts_to_what_the_masked_one_computes(batch_first: bool) -> None:
    model = Attention(batch_first)
    x = torch.randn(2, 5, 6) if batch_first else torch.randn(5, 2, 6)
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.5, example_inputs=x)
    masked = copy.deepcopy(model)
    pruneplug.compact(model)
    attn = model.attn
    assert (attn.embed_dim, attn.num_heads, attn.head_dim) == (8, 4, 2)
    assert tuple(attn.in_proj_weight.shape) == (24, 8) and attn.out_proj.in_features == 8
    helpers.masked_and_compacted_agree(masked, model, (x,))


def test_without_the_query_rescale_multihead_attention_would_not_match(monkeypatch: pytest.MonkeyPatch) -> None:
    # the heads shrink from 4 to 2 channels, and the attention scale 1/sqrt(head_dim) with them
    model, x = Attention(batch_first=True), torch.randn(2, 5, 6)
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.5, example_inputs=x)
    compacting = importlib.import_module("pruneplug.compaction.compact")  # (the package's compact is the function)
    monkeypatch.setattr(compacting, "_rescale_queries", lambda *args: None)
    with pytest.raises(pruneplug.CompactionError, match="does not compute what the masked one did"):
        pruneplug.compact(model)


def test_a_failed_compaction_gives_back_channels_last_weights_as_they_were() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3)).to(memory_format=torch.channels_last)
    pruneplug.prune_channels(model, "ln_structured", n=1, amount=0.5, example_inputs=torch.randn(1, 3, 8, 8))
    weight = model[0].weight_orig
    before = (weight.stride(), weight.data_ptr(), weight.detach().clone())

    def refuse_compacted(module: nn.Module, args: object) -> None:
        if module.weight.shape[0] != 8:
            raise RuntimeError("the compacted layer is refused")

    model[0].register_forward_pre_hook(refuse_compacted)
    with pytest.raises(pruneplug.CompactionError):
        pruneplug.compact(model)
    assert (weight.stride(), weight.data_ptr()) == before[:2] and torch.equal(weight, before[2])
