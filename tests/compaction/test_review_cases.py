"""Cases a review of the channel graph and of load_compacted found wrong: each failed before its fix."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import pruneplug

_spec = importlib.util.spec_from_file_location("compaction_helpers", Path(__file__).with_name("helpers.py"))
assert _spec is not None and _spec.loader is not None
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)


class Unbound(nn.Module):
    """Channels unbound along time and stacked back: the producer and the consumer are one group."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(3, 8, 1)
        self.c2 = nn.Conv1d(8, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.c2(torch.stack(F.relu(self.c1(x)).unbind(2), 2))  # type: ignore[no-any-return]


class Moments(nn.Module):
    """``torch.var_mean`` over space: both outputs carry the channels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: Tensor) -> Tensor:
        _, mean = torch.var_mean(F.relu(self.conv(x)), dim=(2, 3))
        return self.fc(mean)  # type: ignore[no-any-return]


@pytest.mark.parametrize(("model", "x"), [(Unbound, (2, 3, 5)), (Moments, (2, 3, 4, 4))])
def test_a_step_that_drops_or_duplicates_dims_keeps_its_channels_with_their_producer(
    model: type, x: tuple[int, ...]
) -> None:
    torch.manual_seed(0)
    net, inputs = model(), torch.randn(*x)
    graph = pruneplug.trace_channels(net, inputs)
    producer = graph.group_of(next(iter(net.children())), "weight")
    assert producer is not None and producer.prunable and len(graph.prunable) == 1
    pruneplug.prune_channels(net, "ln_structured", n=2, amount=0.5, example_inputs=inputs)
    masked = net(inputs)
    pruneplug.compact(net)
    torch.testing.assert_close(net(inputs), masked, atol=1e-5, rtol=1e-4)


def _compacted_mlp() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2)).eval()
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.5, example_inputs=torch.randn(3, 4))
    pruneplug.compact(model)
    return model


@pytest.mark.parametrize("change", ["extra", "missing"])
def test_a_checkpoint_with_other_keys_changes_nothing_not_even_unresized_layers(change: str) -> None:
    state = {key: value + 1 for key, value in _compacted_mlp().state_dict().items()}
    if change == "extra":
        state["junk"] = torch.zeros(1)
    else:
        del state["3.bias"]
    fresh = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))
    before = {key: value.clone() for key, value in fresh.state_dict().items()}
    with pytest.raises(pruneplug.CompactionError, match="junk" if change == "extra" else "3.bias"):
        pruneplug.load_compacted(fresh, state)
    after = fresh.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


class Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(4, 12)
        self.norm = nn.LayerNorm(12, elementwise_affine=False)
        self.out = nn.Linear(12, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(F.relu(self.norm(self.inner(x))))  # type: ignore[no-any-return]


def test_a_norm_without_parameters_gets_its_width_from_the_channel_graph() -> None:
    torch.manual_seed(0)
    model, x = Plain(), torch.randn(2, 5, 4)
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.5, example_inputs=x)
    pruneplug.compact(model)
    assert model.norm.normalized_shape == (6,)
    with pytest.raises(pruneplug.CompactionError, match="norm hold no parameter.*example_inputs"):
        pruneplug.load_compacted(Plain(), model.state_dict())
    fresh = pruneplug.load_compacted(Plain(), model.state_dict(), example_inputs=x)
    assert fresh.norm.normalized_shape == (6,)
    torch.testing.assert_close(fresh(x), model(x))
