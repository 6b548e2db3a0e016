"""``prune`` on one DTensor weight, on 2 gloo ranks, against one process on the unsharded tensor.

Each rank builds the same Linear from a seed (its weights rounded so that
many entries tie), places its weight by rows, by columns (5 columns on 2
ranks: 3 and 2) or replicated, prunes it twice with ``l1_unstructured``
(a fraction, then a count of what is still alive) and once more with
DTensor importance scores, and checks every mask against one process's,
and the weight ``remove`` leaves.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

import pruneplug

RunRanks = Callable[..., None]


def linear(seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    layer = nn.Linear(5, 7)
    with torch.no_grad():
        layer.weight.copy_(torch.round(layer.weight * 4) / 4)
    return layer


def scenario_placements(rank: int, world: int) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (world,))
    for placement in (Shard(0), Shard(1), Replicate()):
        for seed in range(3):
            sharded, reference = linear(seed), linear(seed)
            sharded.weight = nn.Parameter(distribute_tensor(sharded.weight.detach(), mesh, [placement]))
            scores = torch.rand(7, 5, generator=torch.Generator().manual_seed(seed))
            for step, params in enumerate(({"amount": 0.4}, {"amount": 6}, {"amount": 0.5, "scores": scores})):
                amount = params["amount"]
                given = params.get("scores")
                sharded_scores = None if given is None else distribute_tensor(given, mesh, [placement])
                pruneplug.prune(sharded, "weight", "l1_unstructured", amount=amount, importance_scores=sharded_scores)
                pruneplug.prune(reference, "weight", "l1_unstructured", amount=amount, importance_scores=given)
                mask = sharded.weight_mask
                if not isinstance(mask, DTensor) or mask.placements != (placement,):
                    raise AssertionError(f"{placement}: the mask is not placed like the weight: {mask!r}")
                if not torch.equal(mask.full_tensor(), reference.weight_mask):
                    raise AssertionError(f"{placement}, seed {seed}, prune {step}: the mask differs from one process's")
            history = [type(m).__name__ for m in pruneplug.pruning_history(sharded, "weight")]
            if len(history) != 3:
                raise AssertionError(f"{placement}: the history holds {history}")
            pruneplug.remove(sharded, "weight")
            pruneplug.remove(reference, "weight")
            weight = sharded._parameters["weight"]
            if not isinstance(weight, DTensor) or weight.placements != (placement,):
                raise AssertionError(f"{placement}: after remove, the weight is {weight!r}")
            if not torch.equal(weight.full_tensor(), reference.weight):
                raise AssertionError(f"{placement}: after remove, the weight differs from one process's")


def scenario_refusals(rank: int, world: int) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (world,))
    layer = linear(0)
    layer.weight = nn.Parameter(distribute_tensor(layer.weight.detach(), mesh, [Shard(0)]))
    cases = [
        ({"strategy": "l1_unstructured", "amount": 0.5, "mask_storage": "packed"}, "packed masks"),
    ]
    for kwargs, message in cases:
        try:
            pruneplug.prune(layer, "weight", **kwargs)
        except pruneplug.IncompatibleStrategyError as error:
            if "pruning a DTensor" not in str(error) or message not in str(error):
                raise
        else:
            raise AssertionError(f"{kwargs} was not refused")
        if pruneplug.is_pruned(layer):
            raise AssertionError("a refused prune changed the layer")


SCENARIOS = {"placements": scenario_placements, "refusals": scenario_refusals}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_prune_one_dtensor_on_two_ranks(run_ranks: RunRanks, scenario: str) -> None:
    run_ranks(__file__, scenario, 2)
