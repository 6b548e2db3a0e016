"""prune_channels(group_filter=...): only the groups it accepts are pruned, finer than ignore=."""

from __future__ import annotations

import torch
from torch import Tensor, nn

import pruneplug


class Block(nn.Module):
    """A stream (stem, b) around an inner group (a -> b) that touches no module of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 6, 3, padding=1)
        self.b = nn.Conv2d(6, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.stem(x))
        x = x + self.b(torch.relu(self.a(x)))
        out: Tensor = self.head(x.mean(dim=(2, 3)))
        return out


def dead_rows(module: nn.Module) -> int:
    mask = getattr(module, "weight_mask", None)
    return 0 if mask is None else int((~mask.flatten(1).any(1)).sum())


def test_the_filter_prunes_the_stream_and_leaves_the_inner_group(registry: pruneplug.Registry) -> None:
    model = Block()
    x = torch.randn(2, 3, 8, 8)
    seen: list[str] = []

    def stream_only(group: pruneplug.ChannelGroup) -> bool:
        seen.append(group.name)
        return any(m.module == "stem" for m in group.members)

    pruneplug.prune_channels(model, "ln_structured", amount=0.5, n=2, example_inputs=x, group_filter=stream_only)
    assert (dead_rows(model.stem), dead_rows(model.b), dead_rows(model.a)) == (4, 4, 0)
    assert seen == [g.name for g in pruneplug.trace_channels(model, x).prunable]  # asked about each prunable group
    report = pruneplug.compact(model)
    assert (model.stem.out_channels, model.a.out_channels, model.head.in_features) == (4, 6, 4)
    assert report.groups_compacted == 1


def test_a_global_ranking_only_sees_the_accepted_groups(registry: pruneplug.Registry) -> None:
    model = Block()
    x = torch.randn(2, 3, 8, 8)
    pruneplug.prune_channels(
        model, "ln_structured", amount=5, n=2, example_inputs=x, scope="global", group_filter=lambda g: g.size == 6
    )
    assert (dead_rows(model.a), dead_rows(model.stem)) == (5, 0)
