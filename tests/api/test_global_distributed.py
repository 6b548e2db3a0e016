"""``prune_global`` over DTensor parameters on 2 gloo ranks, against one process on the unsharded model.

Each rank builds the same small model from a seed, shards it (tensor
parallelism: a column-wise and a row-wise Linear, and an unevenly sharded
third weight), prunes it globally, and checks that the masks are DTensors
placed like their weights, that each local mask is its slice of the mask one
process computes on the unsharded copy, that a second prune (over what is
still alive) agrees too, and that the forward gives the same outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import pruneplug

RunRanks = Callable[[str | Path, str, int], None]


def models() -> tuple[nn.Sequential, nn.Sequential]:
    torch.manual_seed(0)
    sharded = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3), nn.Linear(3, 7))
    reference = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3), nn.Linear(3, 7))
    reference.load_state_dict(sharded.state_dict())
    with torch.no_grad():  # many ties, across tensors and within them
        for model in (sharded, reference):
            for index in (0, 2, 3):
                model[index].weight.copy_(torch.round(model[index].weight * 4) / 4)
    return sharded, reference


def targets(model: nn.Sequential) -> list[tuple[nn.Module, str]]:
    return [(model[0], "weight"), (model[2], "weight"), (model[3], "weight")]


def scenario_l1(rank: int, world: int) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Shard, distribute_tensor
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    mesh = init_device_mesh("cpu", (world,))
    sharded, reference = models()
    parallelize_module(sharded[:3], mesh, {"0": ColwiseParallel(), "2": RowwiseParallel()})
    # 7 rows on 2 ranks: 4 and 3 (this Linear is not run sharded: its weight alone is)
    sharded[3].weight = nn.Parameter(distribute_tensor(sharded[3].weight.detach(), mesh, [Shard(0)]))
    for amount in (0.5, 0.3):
        pruneplug.prune_global(targets(sharded), "l1_unstructured", amount=amount)
        pruneplug.prune_global(targets(reference), "l1_unstructured", amount=amount)
        for (module, _), (expected, _) in zip(targets(sharded), targets(reference), strict=True):
            mask = module.weight_mask
            if not isinstance(mask, DTensor) or mask.placements != module.weight_orig.placements:
                raise AssertionError(f"the mask is not a DTensor placed like its weight: {mask!r}")
            if not torch.equal(mask.full_tensor(), expected.weight_mask.bool()):
                raise AssertionError(f"amount {amount}: the gathered mask differs from one process's")
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    out = sharded[:3](x)
    if not torch.allclose(out, reference[:3](x), atol=1e-6):
        raise AssertionError("the sharded forward differs")
    if not torch.equal(sharded[3].weight.full_tensor(), reference[3].weight):
        raise AssertionError("the unevenly sharded weight differs after pruning")


def scenario_packed(rank: int, world: int) -> None:
    """Bit-packed masks: each rank packs its shard; the same masks, forward, state_dict and remove."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Shard, distribute_tensor
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    from pruneplug.storage.packed import PackedMask, added_entries, plain

    mesh = init_device_mesh("cpu", (world,))
    sharded, reference = models()
    parallelize_module(sharded[:3], mesh, {"0": ColwiseParallel(), "2": RowwiseParallel()})
    sharded[3].weight = nn.Parameter(distribute_tensor(sharded[3].weight.detach(), mesh, [Shard(0)]))
    # packed as asked, then kept packed (storage None), the second prune reading the packed shards
    for amount, storage in ((0.5, "packed"), (0.3, None), (4, None)):
        before = [module.weight_mask.detach() for module, _ in targets(sharded)] if storage is None else None
        pruneplug.prune_global(targets(sharded), "l1_unstructured", amount=amount, mask_storage=storage)
        pruneplug.prune_global(targets(reference), "l1_unstructured", amount=amount)
        for index, ((module, _), (expected, _)) in enumerate(zip(targets(sharded), targets(reference), strict=True)):
            mask = module.weight_mask
            if not isinstance(mask, DTensor) or mask.placements != module.weight_orig.placements:
                raise AssertionError(f"the mask is not a DTensor placed like its weight: {mask!r}")
            if (
                type(mask.to_local()) is not PackedMask
                or mask.to_local().packed.numel() != (mask.to_local().numel() + 7) // 8
            ):
                raise AssertionError(f"amount {amount}: the shard of the mask is not bit-packed: {mask.to_local()!r}")
            if not torch.equal(mask.full_tensor(), expected.weight_mask):
                raise AssertionError(f"amount {amount}: the gathered mask differs from one process's")
            if before is not None:  # what the prune removed, counted from the bytes over both ranks
                removed = added_entries(before[index], mask)
                if removed != int(plain(before[index]).full_tensor().sum() - expected.weight_mask.sum()):
                    raise AssertionError(f"amount {amount}: added_entries counted {removed}")
                if added_entries(mask, before[index]) != 0:
                    raise AssertionError(f"amount {amount}: the new mask keeps entries the old one did not")
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    if not torch.allclose(sharded[:3](x), reference[:3](x), atol=1e-6):
        raise AssertionError("the sharded forward with packed masks differs")
    state = sharded.state_dict()
    for key, value in reference.state_dict().items():
        saved = state[key]
        if key.endswith("_mask") and (type(saved.to_local()) is not torch.Tensor or saved.dtype != torch.bool):
            raise AssertionError(f"{key}: the state_dict holds {type(saved.to_local()).__name__}, not a bool shard")
        if not torch.equal(saved.full_tensor() if isinstance(saved, DTensor) else saved, value):
            raise AssertionError(f"{key}: the state_dict differs from one process's")
    pruneplug.unpack_masks(sharded)
    if any(type(module.weight_mask.to_local()) is not torch.Tensor for module, _ in targets(sharded)):
        raise AssertionError("unpack_masks left a sharded mask packed")
    pruneplug.pack_masks(sharded)
    if any(type(module.weight_mask.to_local()) is not PackedMask for module, _ in targets(sharded)):
        raise AssertionError("pack_masks left a sharded mask unpacked")
    for (module, _), (expected, _) in zip(targets(sharded), targets(reference), strict=True):
        pruneplug.remove(module, "weight")
        pruneplug.remove(expected, "weight")
        if not torch.equal(module.weight.full_tensor(), expected.weight):
            raise AssertionError("after remove, a weight differs from one process's")


def scenario_refusals(rank: int, world: int) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (world,))
    model, _ = models()
    model[0].weight = nn.Parameter(distribute_tensor(model[0].weight.detach(), mesh, [Shard(0)]))
    cases = [
        (targets(model), "l1_unstructured", "some targets are DTensors and some are not"),
    ]
    for pairs, strategy, message in cases:
        try:
            pruneplug.prune_global(pairs, strategy, amount=0.5)
        except pruneplug.IncompatibleStrategyError as error:
            if message not in str(error):
                raise
        else:
            raise AssertionError(f"{strategy} over {len(pairs)} targets was not refused")
        if pruneplug.is_pruned(model[0]):
            raise AssertionError("a refused prune_global changed the model")


def scenario_disagreements(rank: int, world: int) -> None:
    """Ranks that disagree on the amount or the targets, and targets on two meshes: refused on every rank."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (world,))
    other = init_device_mesh("cpu", (world,), mesh_dim_names=("other",))
    model, _ = models()
    for index, placed_on in ((0, mesh), (2, mesh), (3, other)):
        weight = model[index].weight.detach()
        model[index].weight = nn.Parameter(distribute_tensor(weight, placed_on, [Shard(0)]))
    before = {key: value.full_tensor() for key, value in model.state_dict().items() if hasattr(value, "full_tensor")}
    pairs = [(model[0], "weight"), (model[2], "weight")]
    cases = [
        (pairs, 0.5 if rank == 0 else 0.25, pruneplug.DistributedSelectionError, "disagree on k"),
        (pairs[: 1 + rank], 0.5, pruneplug.DistributedSelectionError, "disagree on"),
        (targets(model), 0.5, pruneplug.IncompatibleStrategyError, "different device meshes"),
    ]
    for pairs_here, amount, expected, message in cases:
        try:
            pruneplug.prune_global(pairs_here, "l1_unstructured", amount=amount)
        except expected as error:
            if message not in str(error):
                raise
        else:
            raise AssertionError(f"{message}: not refused on rank {rank}")
        if any(pruneplug.is_pruned(module) for module in model):
            raise AssertionError(f"{message}: a refused prune_global changed the model")
    after = {key: value.full_tensor() for key, value in model.state_dict().items() if hasattr(value, "full_tensor")}
    if any(not torch.equal(before[key], after[key]) for key in before):
        raise AssertionError("a refused prune_global changed a weight")


SCENARIOS = {
    "l1": scenario_l1,
    "packed": scenario_packed,
    "refusals": scenario_refusals,
    "disagreements": scenario_disagreements,
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_prune_global_over_dtensors_on_two_ranks(run_ranks: RunRanks, scenario: str) -> None:
    run_ranks(__file__, scenario, 2)
