"""Structured pruning of one DTensor on 2 and 4 gloo ranks, against one process on the unsharded tensor.

Each rank builds the same weight (a 4-D convolution's, 7 output channels, so
that rows shard unevenly; values rounded to quarters, so that many slices
tie and the norms combined from the ranks' parts are exact) and prunes it
with ``ln_structured`` along the sharded dim and along an unsharded one,
for several norms, twice in a row (the second time over the alive slices),
with importance scores, with ``random_structured``, with
``scored_structured``, and with bit-packed masks: every mask must be the
one one process computes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import pruneplug

RunRanks = Callable[..., None]


def conv(seed: int) -> nn.Conv2d:
    torch.manual_seed(seed)
    layer = nn.Conv2d(5, 7, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.round(layer.weight * 8) / 4)
    return layer


def shard(layer: nn.Module, placement: Any) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import distribute_tensor

    mesh = init_device_mesh("cpu", (torch.distributed.get_world_size(),))
    layer.weight = nn.Parameter(distribute_tensor(layer.weight.detach(), mesh, [placement]))


def check(layer: nn.Module, reference: nn.Module, where: str) -> None:
    from torch.distributed.tensor import DTensor

    mask = layer.weight_mask
    if not isinstance(mask, DTensor) or mask.placements != layer.weight_orig.placements:
        raise AssertionError(f"{where}: the mask is not placed like the weight: {mask!r}")
    if not torch.equal(mask.full_tensor(), reference.weight_mask):
        raise AssertionError(f"{where}: the mask differs from one process's")


def scenario_ln(rank: int, world: int) -> None:
    from torch.distributed.tensor import Replicate, Shard

    for placement in (Shard(0), Shard(1), Replicate()):
        for dim in (0, 1, -1):
            for n in (1, 2, math.inf, -math.inf, 0, "fro"):
                for seed in range(2):
                    layer, reference = conv(seed), conv(seed)
                    shard(layer, placement)
                    where = f"{placement}, dim {dim}, n {n}, seed {seed}"
                    for amount in (0.3, 2):
                        pruneplug.prune(layer, "weight", "ln_structured", amount=amount, n=n, dim=dim)
                        pruneplug.prune(reference, "weight", "ln_structured", amount=amount, n=n, dim=dim)
                        check(layer, reference, f"{where}, amount {amount}")


def scenario_scores_and_random(rank: int, world: int) -> None:
    from torch.distributed.tensor import Shard, distribute_tensor

    for placement in (Shard(0), Shard(1)):
        layer, reference = conv(0), conv(0)
        shard(layer, placement)
        scores = torch.rand(7, 5, 3, 3, generator=torch.Generator().manual_seed(3))
        placed = distribute_tensor(scores, layer.weight.device_mesh, [placement])
        pruneplug.prune(layer, "weight", "ln_structured", amount=3, n=1, dim=0, importance_scores=placed)
        pruneplug.prune(reference, "weight", "ln_structured", amount=3, n=1, dim=0, importance_scores=scores)
        check(layer, reference, f"{placement}, importance scores")
        for dim in (0, 1):
            for generator in (True, False):
                layer, reference = conv(1), conv(1)
                shard(layer, placement)
                for model in (layer, reference):
                    torch.manual_seed(11)
                    extra = {"generator": torch.Generator().manual_seed(5)} if generator else {}
                    pruneplug.prune(model, "weight", "random_structured", amount=0.4, dim=dim, **extra)
                    pruneplug.prune(model, "weight", "random_structured", amount=1, dim=dim, **extra)
                check(layer, reference, f"{placement}, random_structured along {dim}, own generator {generator}")


def scenario_scored(rank: int, world: int) -> None:
    """scored_structured along the sharded dim (every reduce) and along another (reduce="max"), twice in a row,
    on rounded weights (many ties) and unrounded ones (sums in float32 must come out as one process's)."""
    from torch.distributed.tensor import Replicate, Shard

    for placement in (Shard(0), Shard(1), Replicate()):
        for dim in (0, 1, -1):
            along = isinstance(placement, Shard) and placement.dim == dim % 4
            reduces = ("sum", "mean", "max", "l2") if along or isinstance(placement, Replicate) else ("max",)
            for reduce in reduces:
                for seed, rounded in ((0, True), (1, True), (2, False)):
                    layer, reference = conv(seed), conv(seed)
                    if not rounded:
                        with torch.no_grad():
                            for model in (layer, reference):
                                model.weight.copy_(torch.randn(7, 5, 3, 3, generator=torch.Generator().manual_seed(9)))
                    shard(layer, placement)
                    for amount in (0.3, 1):
                        kwargs = {"amount": amount, "dim": dim, "reduce": reduce}
                        pruneplug.prune(layer, "weight", "scored_structured", **kwargs)
                        pruneplug.prune(reference, "weight", "scored_structured", **kwargs)
                        check(layer, reference, f"{placement}, dim {dim}, {reduce}, seed {seed}, amount {amount}")


def near_ties(seed: int) -> nn.Linear:
    """A 7 x 11 layer of unrounded weights with rows 0, 2, 5 permutations of each other, and columns 1, 4, 8.

    Such slices' norms are equal up to rounding, so the norms combined from
    the ranks' parts leave their order in doubt.
    """
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(7, 11, generator=generator)
    for row in (2, 5):
        weight[row] = weight[0][torch.randperm(11, generator=generator)]
    for column in (4, 8):
        weight[:, column] = weight[:, 1][torch.randperm(7, generator=generator)]
    layer = nn.Linear(11, 7)
    with torch.no_grad():
        layer.weight.copy_(weight)
    return layer


def scenario_near_ties(rank: int, world: int) -> None:
    from torch.distributed.tensor import Shard

    for placement, dim in ((Shard(1), 0), (Shard(0), 1), (Shard(0), -1)):
        for n in (1, 2, 0.5, "fro"):
            for seed in range(3):
                for amount in (2, 4):
                    layer, reference = near_ties(seed), near_ties(seed)
                    shard(layer, placement)
                    pruneplug.prune(layer, "weight", "ln_structured", amount=amount, n=n, dim=dim)
                    pruneplug.prune(reference, "weight", "ln_structured", amount=amount, n=n, dim=dim)
                    check(layer, reference, f"{placement}, dim {dim}, n {n}, seed {seed}, amount {amount}")


def scenario_packed(rank: int, world: int) -> None:
    """Bit-packed masks (each rank packs its shard): structured twice, then unstructured over the alive entries."""
    from torch.distributed.tensor import Replicate, Shard

    from pruneplug.storage.packed import PackedMask

    for placement in (Shard(0), Shard(1), Replicate()):
        layer, reference = conv(0), conv(0)
        shard(layer, placement)
        steps: list[tuple[str, dict[str, Any]]] = [
            ("ln_structured", {"amount": 2, "n": 1, "dim": 0, "mask_storage": "packed"}),
            ("ln_structured", {"amount": 0.5, "n": 2, "dim": 1}),
            ("l1_unstructured", {"amount": 0.3}),
        ]
        for step, (strategy, params) in enumerate(steps):
            pruneplug.prune(layer, "weight", strategy, **params)
            pruneplug.prune(reference, "weight", strategy, **params)
            check(layer, reference, f"{placement}, step {step}")
            if type(layer.weight_mask.to_local()) is not PackedMask:
                raise AssertionError(f"{placement}, step {step}: the mask's shard is not bit-packed")


def scenario_refusals(rank: int, world: int) -> None:
    from torch.distributed.tensor import Shard

    layer = conv(0)
    shard(layer, Shard(1))
    torch.manual_seed(rank)  # the ranks' generators differ
    cases = [
        ({"strategy": "ln_structured", "amount": 1, "n": "nuc", "dim": 0}, "nuclear norm"),
        ({"strategy": "ln_structured", "amount": 1, "n": 1, "dim": 0, "prune_bias": True}, "prune_bias"),
        ({"strategy": "random_structured", "amount": 1, "dim": 0}, "not in the same state on every rank"),
        ({"strategy": "scored_structured", "amount": 1, "dim": 0, "reduce": "sum"}, "reduce='sum' along an unsharded"),
        ({"strategy": "scored_structured", "amount": 1, "dim": 0, "score": "taylor"}, "not elementwise"),
    ]
    for kwargs, message in cases:
        try:
            pruneplug.prune(layer, "weight", **kwargs)
        except pruneplug.IncompatibleStrategyError as error:
            if message not in str(error):
                raise
        else:
            raise AssertionError(f"{kwargs} was not refused")
        if pruneplug.is_pruned(layer):
            raise AssertionError("a refused prune changed the layer")


SCENARIOS = {
    "ln": scenario_ln,
    "near_ties": scenario_near_ties,
    "scores_and_random": scenario_scores_and_random,
    "refusals": scenario_refusals,
    "scored": scenario_scored,
    "packed": scenario_packed,
}


@pytest.mark.parametrize(
    ("scenario", "world"),
    [
        ("ln", 2),
        ("ln", 4),
        ("near_ties", 2),
        ("near_ties", 4),
        ("scores_and_random", 2),
        ("refusals", 2),
        ("packed", 2),
        ("scored", 2),
        ("scored", 4),
    ],
)
def test_structured_pruning_of_a_dtensor(run_ranks: RunRanks, scenario: str, world: int) -> None:
    run_ranks(__file__, scenario, world)
