"""Reports of a pruned sharded model on 2 gloo ranks: the whole model's counts, as one process reports them.

The model's weights are sharded by rows (unevenly), by columns and
replicated; each rank's report must equal the report one process makes of
the unsharded model, pruned alike. ``pack_masks`` leaves the sharded masks
bool (a packed mask holds a whole tensor's bits), and the report stays the same.
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
    if not isinstance(sharded[0].weight_mask, DTensor) or sharded[0].weight_mask.dtype != torch.bool:
        raise AssertionError("pack_masks changed a sharded mask")
    if type(sharded[2].bias_mask).__name__ != "PackedMask":
        raise AssertionError("pack_masks left an unsharded mask of a sharded model unpacked")
    if pruneplug.report(sharded).tensors != expected.tensors:
        raise AssertionError("after pack_masks, the report differs")


SCENARIOS = {"report": scenario_report}


def test_report_of_a_sharded_model_on_two_ranks(run_ranks: RunRanks) -> None:
    run_ranks(__file__, "report", 2)
