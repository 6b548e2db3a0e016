"""``random_unstructured`` over DTensors on 2 and 4 gloo ranks: one process's masks and generator state, exactly.

Each rank builds the same three weights (one sharded by rows, one by
columns, unevenly, one replicated; the last one float64, so the draws are
made in float64 as one process makes them for these targets together),
prunes them with ``prune_global`` and ``prune``, from a generator of the
strategy's and from torch's global one, and checks every mask and the
generator's state afterwards against one process. A chunk of draws smaller
than the targets makes the runs of a shard cross chunk boundaries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import pruneplug

RunRanks = Callable[..., None]


def layers() -> list[nn.Linear]:
    torch.manual_seed(0)
    return [nn.Linear(5, 7), nn.Linear(9, 6), nn.Linear(4, 3).double()]


def targets(model: list[nn.Linear]) -> list[tuple[nn.Module, str]]:
    return [(layer, "weight") for layer in model]


def sharded() -> list[nn.Linear]:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (torch.distributed.get_world_size(),))
    model = layers()
    for layer, placement in zip(model, (Shard(0), Shard(1), Replicate()), strict=True):
        layer.weight = nn.Parameter(distribute_tensor(layer.weight.detach(), mesh, [placement]))
    return model


def check(model: list[nn.Linear], reference: list[nn.Linear], where: str) -> None:
    for index, (layer, expected) in enumerate(zip(model, reference, strict=True)):
        if not pruneplug.is_pruned(expected):
            continue
        if not torch.equal(layer.weight_mask.full_tensor(), expected.weight_mask):
            raise AssertionError(f"{where}: the mask of target {index} differs from one process's")


def scenario_random(rank: int, world: int) -> None:
    from pruneplug.api import random_distributed

    random_distributed.CHUNK = 16  # (this rank's module: the runs of the shards cross chunk boundaries)
    for own in (True, False):
        model, reference = sharded(), layers()
        generators: list[Any] = []
        for one in (model, reference):
            generator = torch.Generator().manual_seed(3) if own else None
            torch.manual_seed(5)
            extra = {"generator": generator} if own else {}
            pruneplug.prune_global(targets(one), "random_unstructured", amount=0.5, **extra)
            pruneplug.prune_global(targets(one), "random_unstructured", amount=0.3, **extra)
            pruneplug.prune_global(targets(one), "random_unstructured", amount=0, **extra)
            pruneplug.prune(one[1], "weight", "random_unstructured", amount=4, **extra)
            generators.append(generator.get_state() if generator is not None else torch.get_rng_state())
        where = "own generator" if own else "torch's generator"
        check(model, reference, where)
        if not torch.equal(generators[0], generators[1]):
            raise AssertionError(f"{where}: the generator's state differs from one process's after pruning")


def scenario_refusal(rank: int, world: int) -> None:
    model = sharded()
    generator = torch.Generator().manual_seed(rank)  # not alike on the ranks
    try:
        pruneplug.prune_global(targets(model), "random_unstructured", amount=0.5, generator=generator)
    except pruneplug.IncompatibleStrategyError as error:
        if "not in the same state on every rank" not in str(error):
            raise
    else:
        raise AssertionError("generators in different states were not refused")
    if any(pruneplug.is_pruned(layer) for layer in model):
        raise AssertionError("a refused prune changed the model")


SCENARIOS = {"random": scenario_random, "refusal": scenario_refusal}


@pytest.mark.parametrize(("scenario", "world"), [("random", 2), ("random", 4), ("refusal", 2)])
def test_random_unstructured_across_ranks(run_ranks: RunRanks, scenario: str, world: int) -> None:
    run_ranks(__file__, scenario, world)
