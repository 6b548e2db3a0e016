"""count_macs and count_params: hand-computed totals, fake against real runs, and a model left as it was."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from torch import Tensor, nn
from torch._subclasses.fake_tensor import FakeTensor
from torch.utils.flop_counter import FlopCounterMode

import pruneplug
from pruneplug.compaction.macs import _ATTENTION, count_macs, count_params, counting_macs
from pruneplug.errors import InvalidTargetError

from .zoo import EXTRA, ZOO


def conv_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # 16x16 -> 16x16
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),  # 16x16 -> 8x8
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16),  # depthwise, 8x8 -> 8x8
        nn.MaxPool2d(2),  # 8x8 -> 4x4
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 10),
    )


def conv_net_macs(batch: int) -> int:
    """Per output entry of a convolution, (input channels / groups) x kernel area; per linear output, its inputs."""
    first = 8 * 16 * 16 * (3 * 3 * 3)
    second = 16 * 8 * 8 * (8 * 3 * 3)
    depthwise = 16 * 8 * 8 * (1 * 3 * 3)
    linear = 10 * (16 * 4 * 4)
    return batch * (first + second + depthwise + linear)  # BatchNorm, ReLU, pooling and biases count nothing


class Encoder(nn.Module):
    """A transformer-ish block: attention (nn.MultiheadAttention), then an MLP."""

    def __init__(self, width: int = 32, heads: int = 4, need_weights: bool = True) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
        self.need_weights = need_weights

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x + self.attention(x, x, x, need_weights=self.need_weights)[0])
        return x + self.mlp(x)


def encoder_macs(batch: int, tokens: int, width: int = 32) -> int:
    projections = 4 * tokens * width * width  # q, k, v in, and out
    attention = 2 * tokens * tokens * width  # q kᵀ and (softmax) v, over all heads
    mlp = 2 * tokens * width * 2 * width
    return batch * (projections + attention + mlp)


def test_a_conv_net_counts_the_hand_computed_macs() -> None:
    assert count_macs(conv_net(), (torch.randn(2, 3, 16, 16),)) == conv_net_macs(2) == 2 * 140800
    assert count_macs(conv_net(), torch.randn(1, 3, 16, 16)) == conv_net_macs(1)  # a lone tensor is one argument


@pytest.mark.parametrize("need_weights", [True, False])  # False: scaled_dot_product_attention's CPU kernel
@pytest.mark.parametrize("training", [True, False])  # eval: MultiheadAttention's fused fast path, without autograd
def test_attention_counts_the_same_in_every_mode_and_path(need_weights: bool, training: bool) -> None:
    model = Encoder(need_weights=need_weights).train(training)
    with torch.no_grad():
        assert count_macs(model, (torch.randn(2, 10, 32),)) == encoder_macs(2, 10)


@pytest.mark.parametrize("make", [conv_net, Encoder], ids=["conv", "encoder"])
@pytest.mark.parametrize("training", [True, False])
def test_fake_and_real_runs_count_the_same(make: type[nn.Module], training: bool) -> None:
    model = make().train(training)
    inputs = (torch.randn(2, 3, 16, 16),) if make is conv_net else (torch.randn(2, 10, 32),)
    real = count_macs(model, inputs, fake=False)
    if training or make is conv_net:
        assert count_macs(model, inputs) == real
    else:  # a real run without autograd takes attention's fused fast path, which flop_counter does not know
        assert real == count_macs(model.mlp, inputs) < count_macs(model, inputs)


@pytest.mark.parametrize("name", sorted({**ZOO, **EXTRA}))
@pytest.mark.parametrize("training", [True, False])
def test_the_counter_counts_what_flop_counter_counts(name: str, training: bool) -> None:
    """counting_macs counts what FlopCounterMode (given the CPU attention formula) counts, on every zoo model."""
    model, inputs = {**ZOO, **EXTRA}[name]()
    model.train(training)
    torch.manual_seed(0)
    with torch.no_grad(), counting_macs() as counter:
        model(*inputs)
    torch.manual_seed(0)
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_ATTENTION) as reference:
        model(*inputs)
    assert counter.macs() == reference.get_total_flops() // 2 > 0


class Spy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.seen: list[type] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append(type(x))
        self.last = x  # a tensor attribute the forward sets
        return self.linear(x)


def test_nothing_is_computed_for_real() -> None:
    spy = Spy()
    assert count_macs(spy, (torch.randn(3, 4),)) == 3 * 16
    assert spy.seen == [FakeTensor]
    assert not hasattr(spy, "last")


class DataDependent(nn.Module):
    """Branches on a value, which a fake tensor does not have."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        if x.sum().item() > 0:
            return self.linear(self.linear(x))
        return self.linear(x)


def test_a_model_that_cannot_run_on_fakes_is_counted_on_a_real_run() -> None:
    model = DataDependent()
    assert count_macs(model, (torch.ones(3, 4),)) == 2 * 3 * 16
    assert count_macs(model, (-torch.ones(3, 4),)) == 3 * 16


def test_errors_of_the_model_surface_from_the_real_run() -> None:
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        count_macs(nn.Linear(4, 2), (torch.randn(3, 5),))


@pytest.mark.parametrize("fake", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_the_model_is_left_as_it_was(fake: bool, training: bool) -> None:
    model = conv_net().train(training)
    model(torch.randn(4, 3, 16, 16))  # running statistics that are not the initial ones
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_macs(model, (torch.randn(2, 3, 16, 16),), fake=fake)
    after = model.state_dict()
    assert list(after) == list(before)
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert all(module.training is training for module in model.modules())


def test_a_pruned_model_in_eval_without_autograd_still_computes_real_outputs() -> None:
    # pruneplug keeps the masked weight of a frozen eval-mode module between forwards; a fake one
    # computed while counting must not be the one the next real forward reuses.
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2)).eval().requires_grad_(False)
    pruneplug.prune(model[0], "weight", "l1_unstructured", amount=0.5)
    reference = copy.deepcopy(model)
    x = torch.randn(3, 8)
    with torch.no_grad():
        assert count_macs(model, (x,)) == 3 * (8 * 8 + 8 * 2)
        output = model(x)
        assert type(output) is Tensor
        assert torch.equal(output, reference(x))
        assert type(model[0].weight) is Tensor


def test_a_weight_set_by_torchs_pruning_hook_is_given_back() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2))
    torch_prune.l1_unstructured(model[0], "weight", amount=0.5)
    weight = model[0].weight
    assert count_macs(model, (torch.randn(3, 8),)) == 3 * (8 * 8 + 8 * 2)
    assert model[0].weight is weight


def test_count_params_counts_each_parameter_once() -> None:
    model = conv_net()
    expected = (8 * 27 + 8) + 2 * 8 + (16 * 8 * 9) + 2 * 16 + (16 * 9 + 16) + (10 * 256 + 10)
    assert count_params(model) == expected
    tied = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10, bias=False))
    tied[1].weight = tied[0].weight
    assert count_params(tied) == 40


def test_a_pruned_tensor_counts_through_its_orig_parameter() -> None:
    model = conv_net()
    dense = count_params(model)
    pruneplug.prune(model[0], "weight", "l1_unstructured", amount=0.5)
    assert "weight_orig" in dict(model[0].named_parameters())
    assert count_params(model) == dense


def test_bad_targets_are_named() -> None:
    with pytest.raises(InvalidTargetError, match="expected a torch.nn.Module, got Tensor"):
        count_params(torch.zeros(3))  # type: ignore[arg-type]
    lazy = nn.Sequential(nn.LazyLinear(4))
    with pytest.raises(InvalidTargetError, match=r"'0\.weight' is not initialized yet"):
        count_macs(lazy, (torch.randn(2, 3),))
    with pytest.raises(InvalidTargetError, match="not initialized yet"):
        count_params(lazy)
