"""Sharded checkpoints: saved pruned on 2 ranks, loaded on 4 ranks, on 2 other ranks and in one process.

The model is saved tensor-parallel (rows sharded, 7 rows on 2 ranks: 4 and
3) and FSDP2-sharded, and loaded sharded by columns on 4 ranks and whole
in this process: the masks and weights must be those one process computes
on the unsharded model, and the loaded model must be pruned (its forward
masks). Bad folders and misfits raise ``CheckpointError`` and change nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import pruneplug

RunRanks = Callable[..., None]


def model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 7))


def targets(net: nn.Sequential) -> list[tuple[nn.Module, str]]:
    return [(net[0], "weight"), (net[2], "weight")]


def reference() -> nn.Sequential:
    """What one process holds after the pruning the scenarios save."""
    net = model()
    pruneplug.prune_global(targets(net), "l1_unstructured", amount=0.5)
    pruneplug.prune(net[2], "bias", "l1_unstructured", amount=2)
    return net


def sharded(dim: int) -> nn.Sequential:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (torch.distributed.get_world_size(),))
    net = model()
    for module, name in targets(net):
        tensor = getattr(module, name).detach()
        setattr(module, name, nn.Parameter(distribute_tensor(tensor, mesh, [Shard(dim)])))
    return net


def gathered(tensor: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def check_equal(net: nn.Module, expected: nn.Module, where: str, *, forward: bool = False) -> None:
    """The same state dict (gathered); with ``forward``, the same outputs (for a model run whole)."""
    got, want = net.state_dict(), expected.state_dict()
    if sorted(got) != sorted(want):
        raise AssertionError(f"{where}: keys {sorted(got)}, expected {sorted(want)}")
    for key, value in want.items():
        if not torch.equal(gathered(got[key]), value):
            raise AssertionError(f"{where}: {key} differs")
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(2))
    if forward and not torch.allclose(net(x), expected(x), atol=1e-6):
        raise AssertionError(f"{where}: the forward differs")


def scenario_save(rank: int, world: int, folder: str) -> None:
    from torch.distributed.fsdp import fully_shard

    net = sharded(0)
    pruneplug.prune_global(targets(net), "l1_unstructured", amount=0.5)
    pruneplug.prune(net[2], "bias", "l1_unstructured", amount=2)  # a plain tensor, pruned alike on every rank
    check_equal(net, reference(), "before saving")
    path = Path(folder) / "tp"
    pruneplug.save_sharded(net, path)
    try:
        pruneplug.save_sharded(net, path)
    except pruneplug.CheckpointExistsError:
        pass
    else:
        raise AssertionError("saving over an existing checkpoint was not refused")
    pruneplug.save_sharded(net, path, overwrite=True)
    leftovers = [p.name for p in Path(folder).iterdir() if p.name.startswith(".")]
    if leftovers:
        raise AssertionError(f"temporary folders left behind: {leftovers}")
    fsdp = model()
    fully_shard(fsdp)
    pruneplug.prune_global(targets(fsdp), "l1_unstructured", amount=0.5)
    pruneplug.prune(fsdp[2], "bias", "l1_unstructured", amount=2)
    pruneplug.save_sharded(fsdp, Path(folder) / "fsdp")


def scenario_load(rank: int, world: int, folder: str) -> None:
    expected = reference()
    for name in ("tp", "fsdp"):
        net = sharded(1)  # by columns now, on another number of ranks
        pruneplug.load_sharded(net, Path(folder) / name)
        if not all(pruneplug.is_pruned(module) for module, _ in targets(net)):
            raise AssertionError(f"{name}: the loaded model is not pruned")
        check_equal(net, expected, f"{name} loaded on {world} ranks")
    packed = pruneplug.load_sharded(sharded(1), Path(folder) / "tp", mask_storage="packed")
    if type(packed[2].bias_mask).__name__ != "PackedMask" or packed[2].weight_mask.dtype != torch.bool:
        raise AssertionError("mask_storage='packed' did not pack the plain mask, or changed the sharded one")
    check_equal(packed, expected, "loaded with packed masks")
    again = sharded(1)  # pruned otherwise already: the checkpoint's masks replace its own
    pruneplug.prune_global(targets(again), "l1_unstructured", amount=0.2)
    pruneplug.prune(again[2], "bias", "l1_unstructured", amount=1)
    pruneplug.load_sharded(again, Path(folder) / "tp")
    check_equal(again, expected, "loaded into a pruned model")
    try:
        pruneplug.load_sharded(sharded(1), Path(folder) / "nothing here")
    except pruneplug.CheckpointError as error:
        if "no such checkpoint folder" not in str(error):
            raise
    else:
        raise AssertionError("a missing folder was not refused")


SCENARIOS = {"save": scenario_save, "load": scenario_load}


def test_saved_on_two_ranks_loads_on_four_ranks_and_in_one_process(run_ranks: RunRanks, tmp_path: Path) -> None:
    run_ranks(__file__, "save", 2, str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fsdp", "tp"]
    run_ranks(__file__, "load", 4, str(tmp_path))
    expected = reference()
    for name in ("tp", "fsdp"):  # no process group: whole tensors
        net = pruneplug.load_sharded(model(), tmp_path / name)
        check_equal(net, expected, f"{name} loaded in one process", forward=True)


def test_a_misfit_changes_nothing(tmp_path: Path) -> None:
    pruneplug.save_sharded(reference(), tmp_path / "ckpt")
    wider = nn.Sequential(nn.Linear(5, 9), nn.ReLU(), nn.Linear(9, 7))
    before = {k: v.clone() for k, v in wider.state_dict().items()}
    with pytest.raises(pruneplug.CheckpointError, match="cannot load the checkpoint"):
        pruneplug.load_sharded(wider, tmp_path / "ckpt")
    assert not pruneplug.is_pruned(wider[0])
    assert all(torch.equal(v, before[k]) for k, v in wider.state_dict().items())
    pruned_otherwise = model()
    pruneplug.prune(pruned_otherwise[0], "bias", "l1_unstructured", amount=1)
    with pytest.raises(pruneplug.CheckpointError, match="0.bias pruned, the checkpoint holds it unpruned"):
        pruneplug.load_sharded(pruned_otherwise, tmp_path / "ckpt")
    (tmp_path / "plain").mkdir()
    with pytest.raises(pruneplug.CheckpointError, match="pruneplug.json is missing"):
        pruneplug.load_sharded(model(), tmp_path / "plain")
    with pytest.raises(pruneplug.CheckpointError, match="does not exist"):
        pruneplug.save_sharded(model(), tmp_path / "no" / "ckpt")
