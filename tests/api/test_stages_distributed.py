"""``prune_global(..., process_group=)`` over plain tensors that different ranks hold (pipeline stages).

Every rank builds the same small model from a seed (weights rounded to
quarters, so that many entries tie across ranks), keeps its own stage of it,
and prunes its stage's weights with the world as the group; the reference
is one process pruning every stage's weights together, rank 0's first. The
masks must be the reference's, bit for bit, on 2 and 4 ranks (on 4, one
rank holds no target), with bool and packed masks, pruned twice, and with
``prune`` on one tensor per rank. Refusals and disagreements raise on every
rank and change nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

import pruneplug

RunRanks = Callable[..., None]
#: Which layers of the model each rank holds, by world size (on 4 ranks, rank 2 holds none).
STAGES = {2: [[0, 2], [3, 4]], 4: [[0], [2, 3], [], [4]]}


def model(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 6), nn.Linear(6, 6), nn.Linear(6, 3))
    with torch.no_grad():
        for layer in net:
            if isinstance(layer, nn.Linear):
                layer.weight.copy_(torch.round(layer.weight * 4) / 4)
    return net


def scenario_stages(rank: int, world: int) -> None:
    import torch.distributed as dist

    from pruneplug.storage.packed import PackedMask

    group = dist.group.WORLD
    every = [index for stage in STAGES[world] for index in stage]  # rank order
    for seed in range(3):
        mine, reference = model(seed), model(seed)
        targets = [(mine[index], "weight") for index in STAGES[world][rank]]
        for step, (amount, storage) in enumerate(((0.5, None), (7, "packed"), (0.25, None))):
            pruneplug.prune_global(targets, "l1_unstructured", amount=amount, mask_storage=storage, process_group=group)
            pruneplug.prune_global([(reference[index], "weight") for index in every], "l1_unstructured", amount=amount)
            for index in STAGES[world][rank]:
                mask = mine[index].weight_mask
                if not torch.equal(mask, reference[index].weight_mask):
                    raise AssertionError(f"seed {seed}, prune {step}: layer {index}'s mask differs from one process's")
                if step and type(mask) is not PackedMask:
                    raise AssertionError(f"seed {seed}, prune {step}: layer {index}'s mask is not packed")
        history = [pruneplug.pruning_history(mine[index], "weight") for index in STAGES[world][rank]]
        if any(len(steps) != 3 for steps in history):
            raise AssertionError(f"the histories hold {history}")


def scenario_prune_one(rank: int, world: int) -> None:
    """``prune`` on one plain tensor per rank: the amount counts over every rank's tensor."""
    import torch.distributed as dist

    mine, reference = model(4), model(4)
    layers = [0, 2, 3, 4][:world]
    pruneplug.prune(mine[layers[rank]], "weight", "l1_unstructured", amount=0.6, process_group=dist.group.WORLD)
    pruneplug.prune_global([(reference[index], "weight") for index in layers], "l1_unstructured", amount=0.6)
    if not torch.equal(mine[layers[rank]].weight_mask, reference[layers[rank]].weight_mask):
        raise AssertionError("prune across the group differs from prune_global over every rank's tensor")


def scenario_refusals(rank: int, world: int) -> None:
    import torch.distributed as dist

    group = dist.group.WORLD
    net = model(0)
    targets = [(net[index], "weight") for index in STAGES[world][rank]]
    cases: list[tuple[Callable[[], object], type[Exception], str]] = [
        (
            lambda: pruneplug.prune_global(targets, "random_unstructured", amount=0.5, process_group=group),
            pruneplug.IncompatibleStrategyError,
            "random scores are not supported",
        ),
        (
            lambda: pruneplug.prune(net[0], "weight", "ln_structured", amount=1, n=1, dim=0, process_group=group),
            pruneplug.IncompatibleStrategyError,
            "use an unstructured strategy",
        ),
        (
            lambda: pruneplug.prune_global(targets, "l1_unstructured", amount=0.5 + rank / 10, process_group=group),
            pruneplug.DistributedSelectionError,
            "the ranks prune with different strategies or amounts",
        ),
        (
            lambda: pruneplug.prune_global(targets, "l1_unstructured", amount=0.5, process_group="world"),
            pruneplug.InvalidParametersError,
            "process_group must be a torch.distributed.ProcessGroup",
        ),
    ]
    before = {key: value.clone() for key, value in net.state_dict().items()}
    for call, expected, message in cases:
        try:
            call()
        except expected as error:
            if message not in str(error):
                raise
        else:
            raise AssertionError(f"{message}: not refused on rank {rank}")
        if any(pruneplug.is_pruned(layer) for layer in net) or any(
            not torch.equal(value, before[key]) for key, value in net.state_dict().items()
        ):
            raise AssertionError(f"{message}: a refused prune changed the model")


def scenario_mesh_group(rank: int, world: int) -> None:
    """DTensor targets with a process group: it must hold exactly the mesh's ranks."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (world,))
    sharded, reference = model(1), model(1)
    for index in (0, 2):
        sharded[index].weight = nn.Parameter(distribute_tensor(sharded[index].weight.detach(), mesh, [Shard(0)]))
    targets = [(sharded[0], "weight"), (sharded[2], "weight")]
    lonely = dist.new_group([0])  # every rank must create it; only rank 0 is in it
    try:
        pruneplug.prune_global(targets, "l1_unstructured", amount=0.5, process_group=lonely)
    except pruneplug.InvalidParametersError as error:
        wanted = "holds the ranks [0], the targets' device mesh the ranks [0, 1]" if rank == 0 else "ProcessGroup"
        if wanted not in str(error):
            raise
    else:
        raise AssertionError(f"a group that is not the mesh's was taken on rank {rank}")
    pruneplug.prune_global(targets, "l1_unstructured", amount=0.5, process_group=dist.group.WORLD)
    pruneplug.prune_global([(reference[0], "weight"), (reference[2], "weight")], "l1_unstructured", amount=0.5)
    for index in (0, 2):
        if not torch.equal(sharded[index].weight_mask.full_tensor(), reference[index].weight_mask):
            raise AssertionError(f"layer {index}: the mask with the world as the group differs")


def scenario_partial_mesh(rank: int, world: int) -> None:
    """A 1 x 2 mesh over ranks 0 and 1 of 4: pruned with a group of exactly those ranks, refused without one."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    mesh = DeviceMesh("cpu", torch.tensor([[0, 1]]))  # every rank makes it (and its groups); ranks 2 and 3 stay out
    pair = dist.new_group([0, 1])
    if rank > 1:
        return
    sharded, reference = model(2), model(2)
    for index in (0, 2):
        weight = sharded[index].weight.detach()
        sharded[index].weight = nn.Parameter(distribute_tensor(weight, mesh, [Replicate(), Shard(0)]))
    targets = [(sharded[0], "weight"), (sharded[2], "weight")]
    try:
        pruneplug.prune_global(targets, "l1_unstructured", amount=0.5)
    except pruneplug.IncompatibleStrategyError as error:
        if "or pass process_group= holding exactly its ranks" not in str(error):
            raise
    else:
        raise AssertionError("a 2-D mesh over part of the world was pruned without a group")
    pruneplug.prune_global(targets, "l1_unstructured", amount=0.5, process_group=pair)
    pruneplug.prune_global([(reference[0], "weight"), (reference[2], "weight")], "l1_unstructured", amount=0.5)
    for index in (0, 2):
        if not torch.equal(sharded[index].weight_mask.full_tensor(), reference[index].weight_mask):
            raise AssertionError(f"layer {index}: the mask over the partial mesh differs from one process's")


SCENARIOS = {
    "stages": scenario_stages,
    "prune_one": scenario_prune_one,
    "refusals": scenario_refusals,
    "mesh_group": scenario_mesh_group,
    "partial_mesh": scenario_partial_mesh,
}


@pytest.mark.parametrize(
    ("scenario", "world"),
    [("stages", 2), ("stages", 4), ("prune_one", 2), ("refusals", 2), ("mesh_group", 2), ("partial_mesh", 4)],
)
def test_pruning_across_a_process_group(run_ranks: RunRanks, scenario: str, world: int) -> None:
    run_ranks(__file__, scenario, world)


def test_a_process_group_without_torch_distributed_is_refused() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        pytest.skip("this process already joined a group")
    layer = nn.Linear(3, 2)
    with pytest.raises(pruneplug.DistributedSelectionError, match="torch.distributed is not initialized"):
        pruneplug.prune_global([(layer, "weight")], "l1_unstructured", amount=0.5, process_group=object())
    assert not pruneplug.is_pruned(layer)
