"""prune_channels: whole coupled channels masked with pruneplug's reparametrization, all or nothing.

The masks are ordinary pruneplug masks (``weight_orig``, ``weight_mask``), so
``pruneplug.remove`` works on the result; the scopes, ``round_to`` and
iterative calls prune the counts they promise; every refused call leaves the
model exactly as it was.
"""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import pruneplug
from pruneplug.core.cache import held
from pruneplug.core.lazy import lazily_masked_hook
from pruneplug.storage.packed import PackedMask
from pruneplug.testing import assert_unchanged, snapshot

_spec = importlib.util.spec_from_file_location("compaction_helpers", Path(__file__).with_name("helpers.py"))
assert _spec is not None and _spec.loader is not None
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)


class ConvNet(nn.Module):
    """conv-BN-ReLU (8), conv-BN-ReLU (16), a residual 1x1 conv (16), flatten (16 x 2 x 2) into a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16, 16, 1)
        self.fc = nn.Linear(16 * 2 * 2, 5)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = x + self.conv3(x)
        out: Tensor = self.fc(torch.flatten(x, 1))
        return out


def conv_net() -> tuple[ConvNet, Tensor]:
    return helpers.randomize_norms(ConvNet()), torch.randn(2, 3, 4, 4)


def kept_rows(module: nn.Module, name: str = "weight", dim: int = 0) -> Tensor:
    """Bool per slice along ``dim``: whether any entry of it is unmasked."""
    mask = getattr(module, f"{name}_mask")
    others = [d for d in range(mask.dim()) if d != dim]
    return mask.any(dim=others) if others else mask.clone()


class MLP(nn.Module):
    """Linear layers of the given widths with ReLUs between them."""

    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(widths))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


def hidden_kept(model: MLP) -> list[int]:
    """Kept channels of each hidden layer (its output rows)."""
    return [int(kept_rows(layer).sum()) for layer in model.layers[:-1]]


# -- the masks -------------------------------------------------------------------------------------


def test_the_masks_are_pruneplug_reparametrizations_of_every_coupled_tensor() -> None:
    model, x = conv_net()
    model.eval()
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.5, example_inputs=x)
    rows = kept_rows(model.conv1)
    assert int(rows.sum()) == 4
    for module, name, dim in [
        (model.conv1, "weight", 0),
        (model.conv1, "bias", 0),
        (model.bn1, "weight", 0),
        (model.bn1, "bias", 0),
        (model.conv2, "weight", 1),
    ]:
        assert isinstance(module._parameters[f"{name}_orig"], nn.Parameter)
        assert module._buffers[f"{name}_mask"].dtype == torch.bool
        assert torch.equal(kept_rows(module, name, dim), rows), f"{module}.{name}"
        assert pruneplug.is_pruned(module)
    assert "running_mean_mask" not in model.bn1._buffers  # statistics are sliced when compacting, never masked
    stream = kept_rows(model.conv2)  # conv2, bn2, conv3 in and out, and fc's 4 features per channel: one group
    assert torch.equal(kept_rows(model.conv3), stream) and torch.equal(kept_rows(model.conv3, dim=1), stream)
    assert torch.equal(kept_rows(model.fc, dim=1), stream.repeat_interleave(4))
    assert "bias_mask" not in model.fc._buffers  # the classes are the model's outputs
    assert kept_rows(model.fc).all() and kept_rows(model.conv1, dim=1).all()


def test_remove_makes_the_masks_permanent_and_keeps_the_outputs() -> None:
    model, x = conv_net()
    model.eval()
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.5, example_inputs=x)
    masked = helpers.run(model, (x,))
    pruneplug.remove(model)
    assert helpers.pruning_leftovers(model) == []
    assert torch.equal(helpers.run(model, (x,))[0], masked[0])
    assert int((model.conv1.weight.flatten(1).abs().sum(1) == 0).sum()) == 4


def test_remove_keeps_a_norm_s_channel_mask_so_its_statistics_stay_right() -> None:
    model = nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 3))
    x = torch.randn(4, 6)
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.5, example_inputs=x)
    masked = helpers.run(model, (x,))
    pruneplug.remove(model)
    assert int(model[1].channels_mask.sum()) == 8
    helpers.assert_matches(masked, helpers.run(model, (x,)))


# -- how many, and which ---------------------------------------------------------------------------


def test_local_scope_prunes_the_amount_of_every_group() -> None:
    model = MLP([4, 32, 24, 10, 2])
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.25, example_inputs=torch.randn(2, 4))
    assert hidden_kept(model) == [24, 18, 8]  # 10 - round(2.5) = 8: the amount's own rounding


def test_global_scope_prunes_the_total_asked_for() -> None:
    model = MLP([4, 32, 24, 10, 2])
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.5, scope="global", example_inputs=torch.randn(2, 4))
    assert sum(hidden_kept(model)) == 66 - 33


def test_global_scope_compares_a_channel_with_its_own_group_s_typical_channel() -> None:
    model = MLP([4, 16, 16, 2])
    with torch.no_grad():
        for layer in model.layers:
            layer.weight.fill_(1.0)
            layer.bias.fill_(1.0)
        model.layers[0].weight[5].mul_(0.5)  # well below its group's mean
        model.layers[1].weight.mul_(0.01)  # a whole group of small weights: typical for its group
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=1, scope="global", example_inputs=torch.randn(2, 4))
    assert torch.nonzero(~kept_rows(model.layers[0])).flatten().tolist() == [5]
    assert kept_rows(model.layers[1]).all()


def test_global_scope_never_empties_a_group() -> None:
    model = MLP([4, 32, 8, 2])
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=1.0, scope="global", example_inputs=torch.randn(2, 4))
    assert hidden_kept(model) == [1, 1]


def test_round_to_keeps_multiples_of_it_where_a_group_has_as_many() -> None:
    model = MLP([4, 64, 40, 12, 6, 2])
    with pytest.warns(
        UserWarning, match=r"round_to=8 is more than the channels of group\(s\) #\d+ \(layers.3.weight, 6\)"
    ):
        pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.3, round_to=8, example_inputs=torch.randn(2, 4))
    assert hidden_kept(model) == [48, 32, 8, 6]  # 44.8 -> 48, 28 -> 32, 8.4 -> 8; 6 < 8 stays whole


def test_pruning_twice_prunes_the_amount_of_what_is_left() -> None:
    model = MLP([4, 32, 16, 2])
    x = torch.randn(2, 4)
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.5, example_inputs=x)
    first = [kept_rows(layer).clone() for layer in model.layers[:-1]]
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.5, example_inputs=x)
    assert hidden_kept(model) == [8, 4]  # 75% of each group
    for before, layer in zip(first, model.layers[:-1]):
        assert not (kept_rows(layer) & ~before).any()  # a mask only ever loses entries
    masked = copy.deepcopy(model)
    pruneplug.compact(model)
    assert [layer.out_features for layer in model.layers] == [8, 4, 2]
    helpers.masked_and_compacted_agree(masked, model, (x,))


def test_random_structured_masks_whole_channels() -> None:
    model, x = conv_net()
    model.eval()
    pruneplug.prune_channels(model, "random_structured", amount=0.5, example_inputs=x)
    assert int(kept_rows(model.conv1).sum()) == 4
    assert torch.equal(kept_rows(model.bn1), kept_rows(model.conv1))
    masked = copy.deepcopy(model)
    pruneplug.compact(model)
    assert model.conv1.out_channels == 4 and model.conv2.out_channels == 8
    helpers.masked_and_compacted_agree(masked, model, (x,))


def _negated_magnitude(values: Tensor, target: object) -> Tensor:
    return -values.abs()


class _NegatedPlugin:
    @staticmethod
    @pruneplug.hookimpl
    def pruneplug_add_importance_scores() -> list[pruneplug.ImportanceScore]:
        return [pruneplug.ImportanceScore("negated", _negated_magnitude, elementwise=True)]


def test_scored_structured_ranks_channels_by_a_registered_score() -> None:
    registry = pruneplug.Registry(load_entry_points=False)
    registry.plugin_manager.register(_NegatedPlugin(), name="negated-plugin")
    with pruneplug.use_registry(registry):
        model, x = MLP([4, 8, 2]), torch.randn(2, 4)
        with torch.no_grad():
            model.layers[0].weight.copy_(torch.arange(1.0, 9.0)[:, None].expand(8, 4))
            model.layers[0].bias.fill_(1.0)
            model.layers[1].weight.fill_(1.0)
        pruneplug.prune_channels(
            model, "scored_structured", score="negated", reduce="sum", amount=0.25, example_inputs=x
        )
    # the score says large is unimportant: the two largest rows go
    assert torch.nonzero(~kept_rows(model.layers[0])).flatten().tolist() == [6, 7]


# -- refused calls change nothing ------------------------------------------------------------------


def _bad_calls() -> dict[str, tuple[type[Exception], dict[str, Any]]]:
    return {
        "an amount that empties a group": (pruneplug.InvalidAmountError, {"amount": 1.0}),
        "a count that empties a group": (pruneplug.InvalidAmountError, {"amount": 8}),
        "dim=": (pruneplug.InvalidParametersError, {"dim": 0}),
        "prune_bias=": (pruneplug.InvalidParametersError, {"prune_bias": True}),
        "an unknown scope": (pruneplug.InvalidParametersError, {"scope": "layer"}),
        "round_to=0": (pruneplug.InvalidParametersError, {"round_to": 0}),
        "an unstructured strategy": (pruneplug.IncompatibleStrategyError, {"strategy": "l1_unstructured", "n": None}),
        "a module of another model": (pruneplug.InvalidTargetError, {"ignore": [nn.Linear(2, 2)]}),
        "an unknown module name": (pruneplug.InvalidTargetError, {"ignore": ["conv9"]}),
        "inputs that fail past the BatchNorms": (
            pruneplug.ChannelTraceError,
            {"example_inputs": torch.randn(2, 3, 6, 6)},
        ),
    }


@pytest.mark.parametrize("case", list(_bad_calls()))
@pytest.mark.parametrize("pruned_before", [False, True])
def test_a_refused_call_leaves_the_model_exactly_as_it_was(case: str, pruned_before: bool) -> None:
    error, changes = _bad_calls()[case]
    model, x = conv_net()
    model.train()
    if pruned_before:
        pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.25, example_inputs=x)
    kwargs: dict[str, Any] = {"strategy": "ln_structured", "n": 2, "amount": 0.5, "example_inputs": x, **changes}
    if kwargs["n"] is None:
        del kwargs["n"]
    strategy = kwargs.pop("strategy")
    before = snapshot(model)
    with pytest.raises(error):
        pruneplug.prune_channels(model, strategy, **kwargs)
    assert_unchanged(before, model)


def test_pruning_changes_no_running_statistic_and_no_training_flag() -> None:
    model, x = conv_net()
    model.train()
    model.bn2.eval()
    statistics = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.5, example_inputs=x)
    for key, value in statistics.items():
        assert torch.equal(model.state_dict()[key], value), key
    assert [m.training for m in model.modules()] == [True, True, True, True, False, True, True]


# -- norms that see only the kept channels ---------------------------------------------------------


def _norm_nets() -> dict[str, Callable[[], tuple[nn.Module, Tensor]]]:
    def sequence(norm: nn.Module) -> Callable[[], tuple[nn.Module, Tensor]]:
        return lambda: (nn.Sequential(nn.Linear(6, 16), norm, nn.GELU(), nn.Linear(16, 3)), torch.randn(4, 5, 6))

    def image(norm: nn.Module) -> Callable[[], tuple[nn.Module, Tensor]]:
        return lambda: (
            nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), norm, nn.ReLU(), nn.Conv2d(16, 3, 1)),
            torch.randn(2, 3, 5, 5),
        )

    return {
        "LayerNorm": sequence(nn.LayerNorm(16)),
        "LayerNorm without affine": sequence(nn.LayerNorm(16, elementwise_affine=False)),
        "RMSNorm": sequence(nn.RMSNorm(16)),
        "GroupNorm": image(nn.GroupNorm(4, 16)),
        "GroupNorm without affine": image(nn.GroupNorm(4, 16, affine=False)),
        "InstanceNorm": image(nn.InstanceNorm2d(16, affine=True, track_running_stats=True)),
        "BatchNorm without affine": image(nn.BatchNorm2d(16, affine=False)),
    }


@pytest.mark.parametrize("name", list(_norm_nets()))
def test_a_net_with_a_norm_compacts_to_what_the_masked_one_computes(name: str) -> None:
    model, x = _norm_nets()[name]()
    helpers.randomize_norms(model)
    model.train()
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.5, example_inputs=x)
    masked = copy.deepcopy(model)
    report = pruneplug.compact(model)
    assert report.verified_modes == ("eval", "train")
    assert report.params_after < report.params_before
    eight = torch.randn(2, 8, 5, 5) if x.dim() == 4 else torch.randn(2, 8)
    assert helpers.run(model[1], (eight,))[0].shape == eight.shape  # the norm's attributes say 8 channels now
    helpers.masked_and_compacted_agree(masked, model, (x,))
    assert helpers.pruning_leftovers(model) == []


def test_tracing_pruning_and_compacting_keep_no_masked_tensor_alive() -> None:
    """pruneplug's own forwards run uncached: a model's masked weights are never all held at once."""

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    x = torch.randn(2, 8)
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.25, example_inputs=x)
    pruneplug.trace_channels(model, x)  # (a forward of the masked model)
    hooks = [lazily_masked_hook(model[i], "weight") for i in (0, 2, 4)]
    assert all(h is not None for h in hooks) and [held(h) for h in hooks] == [None, None, None]
    with torch.no_grad():
        model(x)  # the user's own eval forward keeps them, as always
    assert all(held(h) is not None for h in hooks)


def test_masks_can_be_packed_and_stay_packed_through_compaction() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    x = torch.randn(2, 8)
    pruneplug.prune(model[2], "weight", "l1_unstructured", amount=5, mask_storage="packed")  # zeros compaction keeps
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.25, example_inputs=x, mask_storage="packed")
    assert all(isinstance(model[i].weight_mask, PackedMask) for i in (0, 2))
    with torch.no_grad():
        masked = model(x)
    pruneplug.compact(model)
    assert isinstance(model[2].weight_mask, PackedMask) and model[2].weight_mask.shape == (4, 12)
    assert not hasattr(model[0], "weight_mask")  # all kept: no mask left
    with torch.no_grad():
        assert torch.allclose(model(x), masked, atol=1e-6)
    with pytest.raises(pruneplug.InvalidParametersError, match="mask_storage"):
        pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.25, example_inputs=x, mask_storage="bits")
