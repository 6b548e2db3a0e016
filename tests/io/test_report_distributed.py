"""Reports of a pruned sharded model on 2 and 4 gloo ranks: the whole model's counts, as one process reports them.

The model's weights are sharded by rows (unevenly), by columns and
replicated; each rank's report must equal the report one process makes of
the unsharded model, pruned alike. ``pack_masks`` packs each rank's shard
of the sharded masks, and the report stays the same (mask bytes included).
On a 2 x 2 mesh, entries replicated over one mesh dim are counted once.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

import pruneplug

RunRanks = Callable[..., None]


def model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 9), nn.Linear(9, 3))


def scenario_report(rank: int, world: int) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (world,))
    sharded, reference = model(), model()
    for index, placement in zip((0, 2, 3), (Shard(0), Shard(1), Replicate()), strict=True):
        weight = sharded[index].weight.detach()
        sharded[index].weight = nn.Parameter(distribute_tensor(weight, mesh, [placement]))
    for net in (sharded, reference):
        pruneplug.prune_global([(net[i], "weight") for i in (0, 2, 3)], "l1_unstructured", amount=0.6)
        pruneplug.prune(net[2], "bias", "l1_unstructured", amount=3)
    expected = pruneplug.report(reference)
    got = pruneplug.report(sharded)
    if got.tensors != expected.tensors or got.totals != expected.totals:
        raise AssertionError(f"the sharded model's report differs:\n{got.tensors}\n{expected.tensors}")
    pruneplug.pack_masks(sharded)
    pruneplug.pack_masks(reference)
    mask = sharded[0].weight_mask
    if not isinstance(mask, DTensor) or mask.dtype != torch.bool or type(mask.to_local()).__name__ != "PackedMask":
        raise AssertionError(f"pack_masks did not pack the shard of a sharded mask: {mask!r}")
    if type(sharded[2].bias_mask).__name__ != "PackedMask":
        raise AssertionError("pack_masks left an unsharded mask of a sharded model unpacked")
    packed, expected = pruneplug.report(sharded), pruneplug.report(reference)
    if packed.tensors != expected.tensors or packed.totals != expected.totals:
        raise AssertionError(f"after pack_masks, the report differs:\n{packed.totals}\n{expected.totals}")


def scenario_report_2d(rank: int, world: int) -> None:
    """On a 2 x 2 mesh, ``Replicate`` on one mesh dim: the entries the ranks share are counted once."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (2, 2))
    sharded, reference = model(), model()
    placements = ([Shard(0), Replicate()], [Replicate(), Shard(1)], [Shard(0), Shard(1)])
    for index, placement in zip((0, 2, 3), placements, strict=True):
        weight = sharded[index].weight.detach()
        sharded[index].weight = nn.Parameter(distribute_tensor(weight, mesh, placement))
    for net in (sharded, reference):
        for index in (0, 2, 3):
            pruneplug.prune(net[index], "weight", "l1_unstructured", amount=0.4)
    expected = pruneplug.report(reference)
    got = pruneplug.report(sharded)
    if got.tensors != expected.tensors or got.totals != expected.totals:
        raise AssertionError(f"the 2-D sharded model's report differs:\n{got.tensors}\n{expected.tensors}")


SCENARIOS = {"report": scenario_report, "report_2d": scenario_report_2d}


def test_report_of_a_sharded_model_on_two_ranks(run_ranks: RunRanks) -> None:
    run_ranks(__file__, "report", 2)


def test_report_of_a_model_sharded_on_a_2d_mesh(run_ranks: RunRanks) -> None:
    run_ranks(__file__, "report_2d", 4)
