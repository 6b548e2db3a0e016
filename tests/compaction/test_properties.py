"""Property test of channel pruning and compaction on random small networks.

Hypothesis draws a stack of blocks (conv with or without BatchNorm, residual
adds, two-branch concatenations, depthwise convs with channel multiplier 1 or
2, grouped convs with a GroupNorm, a gate multiplying the two chunks of a
conv), a head (global pooling or a flatten of the whole map, then linear
layers), an amount, a scope and a mode; whatever it draws, prune_channels +
compact keep the output's shape, compute what the masked model computes in
eval and train mode, and never add parameters.

Hypothesis does not control torch's RNG, so each example draws an int seed.
"""

from __future__ import annotations

import copy
import importlib.util
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from torch import Tensor, nn

import pruneplug

_spec = importlib.util.spec_from_file_location("compaction_helpers", Path(__file__).with_name("helpers.py"))
assert _spec is not None and _spec.loader is not None
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)

SIZE = 4  # input height and width
WIDTHS = st.integers(3, 10)  # >= 3: no local amount below 0.8 rounds to a whole group


@dataclass(frozen=True)
class Block:
    kind: str  # "conv", "residual", "concat", "depthwise", "grouped" or "gate"
    width: int  # output width ("conv", "depthwise", "gate"), inner width ("residual"), first branch ("concat")
    other: int  # the second branch's width ("concat"), the multiplier's parity ("depthwise"), half the output
    # width ("grouped")
    kernel: int
    norm: bool


def _conv(in_channels: int, out_channels: int, block: Block) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, block.kernel, padding=block.kernel // 2)]
    if block.norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Residual(nn.Module):
    def __init__(self, channels: int, block: Block) -> None:
        super().__init__()
        self.inner = _conv(channels, block.width, block)
        self.back = nn.Conv2d(block.width, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.back(self.inner(x))


class Concat(nn.Module):
    def __init__(self, channels: int, block: Block) -> None:
        super().__init__()
        self.a = _conv(channels, block.width, block)
        self.b = _conv(channels, block.other, block)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.a(x), self.b(x)], dim=1)


class Depthwise(nn.Module):
    def __init__(self, channels: int, block: Block) -> None:
        super().__init__()
        m = 1 + block.other % 2
        self.dw = nn.Conv2d(channels, channels * m, block.kernel, padding=block.kernel // 2, groups=channels)
        self.norm = nn.BatchNorm2d(channels * m) if block.norm else nn.Identity()
        self.pw = nn.Conv2d(channels * m, block.width, 1)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.pw(F.relu(self.norm(self.dw(x)))))


class Grouped(nn.Module):
    def __init__(self, channels: int, block: Block) -> None:
        super().__init__()
        self.a = nn.Conv2d(channels, 2 * block.width, 1)
        self.g = nn.Conv2d(2 * block.width, 2 * block.other, block.kernel, padding=block.kernel // 2, groups=2)
        self.norm = nn.GroupNorm(2, 2 * block.other) if block.norm else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.norm(self.g(F.relu(self.a(x)))))


class Gate(nn.Module):
    def __init__(self, channels: int, block: Block) -> None:
        super().__init__()
        self.a = nn.Conv2d(channels, 2 * block.width, 1)

    def forward(self, x: Tensor) -> Tensor:
        u, v = self.a(x).chunk(2, dim=1)
        return u * torch.sigmoid(v)


class Stack(nn.Module):
    def __init__(self, stem: int, blocks: list[Block], pool: bool, hidden: list[int], classes: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, stem, 3, padding=1)
        layers: list[nn.Module] = []
        channels = stem
        for block in blocks:
            if block.kind == "conv":
                layers.append(_conv(channels, block.width, block))
                channels = block.width
            elif block.kind == "residual":
                layers.append(Residual(channels, block))
            elif block.kind == "concat":
                layers.append(Concat(channels, block))
                channels = block.width + block.other
            elif block.kind == "depthwise":
                layers.append(Depthwise(channels, block))
                channels = block.width
            elif block.kind == "grouped":
                layers.append(Grouped(channels, block))
                channels = 2 * block.other
            else:
                layers.append(Gate(channels, block))
                channels = block.width
        self.blocks = nn.Sequential(*layers)
        self.pool = pool
        features = channels if pool else channels * SIZE * SIZE
        widths = [features, *hidden, classes]
        self.head = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(widths))

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(F.relu(self.stem(x)))
        x = x.mean((2, 3)) if self.pool else torch.flatten(x, 1)
        for i, layer in enumerate(self.head):
            x = layer(x) if i == len(self.head) - 1 else F.relu(layer(x))
        return x


BLOCKS = st.builds(
    Block,
    kind=st.sampled_from(["conv", "residual", "concat", "depthwise", "grouped", "gate"]),
    width=WIDTHS,
    other=WIDTHS,
    kernel=st.sampled_from([1, 3]),
    norm=st.booleans(),
)


@settings(max_examples=30)
@given(
    stem=WIDTHS,
    blocks=st.lists(BLOCKS, min_size=1, max_size=3),
    pool=st.booleans(),
    hidden=st.lists(WIDTHS, max_size=2),
    amount=st.floats(0.1, 0.8),
    scope=st.sampled_from(["local", "global"]),
    train=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_a_random_network_compacts_to_what_its_masked_twin_computes(
    stem: int, blocks: list[Block], pool: bool, hidden: list[int], amount: float, scope: str, train: bool, seed: int
) -> None:
    torch.manual_seed(seed)
    model = helpers.randomize_norms(Stack(stem, blocks, pool, hidden, classes=2), seed)
    model.train(train)
    x = torch.randn(2, 3, SIZE, SIZE)
    dense = helpers.run(model, (x,))
    params = pruneplug.count_params(model)

    pruneplug.prune_channels(model, "ln_structured", n=2, amount=amount, scope=scope, example_inputs=x)
    masked = copy.deepcopy(model)
    report = pruneplug.compact(model)

    assert [t.shape for t in helpers.run(model, (x,))] == [t.shape for t in dense]
    helpers.masked_and_compacted_agree(masked, model, (x,))
    assert report.params_after == pruneplug.count_params(model) <= params
    assert helpers.pruning_leftovers(model) == []
