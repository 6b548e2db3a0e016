"""``prune`` on one DTensor weight, on 2 gloo ranks, against one process on the unsharded tensor.

Each rank builds the same Linear from a seed (its weights rounded so that
many entries tie), places its weight by rows, by columns (5 columns on 2
ranks: 3 and 2) or replicated, prunes it twice with ``l1_unstructured``
(a fraction, then a count of what is still alive) and once more with
DTensor importance scores, and checks every mask against one process's,
and the weight ``remove`` leaves; then the same with bit-packed masks.
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


def scenario_packed(rank: int, world: int) -> None:
    """``mask_storage="packed"``: each rank packs its shard; the same masks, pruned again over packed shards."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    from pruneplug.storage.packed import PackedMask

    mesh = init_device_mesh("cpu", (world,))
    for placement in (Shard(0), Shard(1), Replicate()):
        sharded, reference = linear(0), linear(0)
        sharded.weight = nn.Parameter(distribute_tensor(sharded.weight.detach(), mesh, [placement]))
        for step, (amount, storage) in enumerate(((0.4, "packed"), (6, None), (0.5, "packed"))):
            pruneplug.prune(sharded, "weight", "l1_unstructured", amount=amount, mask_storage=storage)
            pruneplug.prune(reference, "weight", "l1_unstructured", amount=amount)
            local = sharded.weight_mask.to_local()
            if type(local) is not PackedMask:
                raise AssertionError(f"{placement}, prune {step}: the mask's shard is {type(local).__name__}")
            if not torch.equal(sharded.weight_mask.full_tensor(), reference.weight_mask):
                raise AssertionError(f"{placement}, prune {step}: the mask differs from one process's")
        pruneplug.prune(sharded, "weight", "l1_unstructured", amount=2, mask_storage="bool")
        pruneplug.prune(reference, "weight", "l1_unstructured", amount=2)
        if type(sharded.weight_mask.to_local()) is not torch.Tensor:
            raise AssertionError(f"{placement}: mask_storage='bool' left the shard packed")
        if not torch.equal(sharded.weight_mask.full_tensor(), reference.weight_mask):
            raise AssertionError(f"{placement}: after unpacking, the mask differs from one process's")


SCENARIOS = {"placements": scenario_placements, "packed": scenario_packed}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_prune_one_dtensor_on_two_ranks(run_ranks: RunRanks, scenario: str) -> None:
    run_ranks(__file__, scenario, 2)
