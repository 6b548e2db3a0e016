"""Sharded checkpoints: saved pruned on 2 ranks, loaded on 4 ranks, on 2 other ranks and in one process.

The model is saved tensor-parallel (rows sharded, 7 rows on 2 ranks: 4 and
3) and FSDP2-sharded, and loaded sharded by columns on 4 ranks, through
``parallelize_module`` (Colwise then Rowwise) on 2 ranks, and whole in this
process (``load_sharded`` without a group, or DCP's ``dcp_to_torch_save``
then ``load_pruned_state_dict``): the masks and weights must be those one
process computes on the unsharded model, and the loaded model must be
pruned (its forward masks). ``load_state_dict`` and ``remove`` are checked on
the unevenly sharded model and on the parallelized one. Bad folders and misfits raise
``CheckpointError`` (on every rank, where one rank's model differs) and
change nothing. Bit-packed masks (each rank packs its shard) are saved as
bool masks and loaded packed with ``mask_storage="packed"``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from torch import nn

import pruneplug

if TYPE_CHECKING:
    from torch.distributed.tensor import Placement

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


def refused_on_both_ranks(call: Callable[[], object], fault: str, rank: int, accepted: str) -> None:
    """``call`` raises ``CheckpointError`` on both ranks: rank 1 (at fault) naming ``fault``, rank 0 "another rank"."""
    try:
        call()
    except pruneplug.CheckpointError as error:
        mine = fault in str(error)
        if mine != (rank == 1) or (rank == 0 and "another rank" not in str(error)):
            raise AssertionError(f"rank {rank}: unexpected error {error}") from error
    else:
        raise AssertionError(accepted)


def check_packed(net: nn.Sequential, where: str) -> None:
    """Every weight mask of ``net`` is a DTensor whose shard here is bit-packed."""
    from pruneplug.storage.packed import PackedMask

    for index in (0, 2):
        local = net[index].weight_mask.to_local()
        if type(local) is not PackedMask:
            raise AssertionError(f"{where}: {index}.weight_mask's shard is a {type(local).__name__}")


def check_removed(
    net: nn.Sequential, expected: nn.Sequential, placements: dict[int, tuple[Placement, ...]], where: str
) -> None:
    """``remove`` leaves each weight a DTensor parameter placed as before, holding ``orig * mask``."""
    from torch.distributed.tensor import DTensor

    pruneplug.remove(net)
    for index in (0, 2):
        weight = net[index].weight
        if not (isinstance(weight, nn.Parameter) and isinstance(weight, DTensor)):
            raise AssertionError(f"{where}: {index}.weight after remove is a {type(weight).__name__}")
        if weight.placements != placements[index]:
            raise AssertionError(f"{where}: {index}.weight after remove is placed {weight.placements}")
        if not torch.equal(gathered(weight.detach()), expected[index].weight_orig * expected[index].weight_mask):
            raise AssertionError(f"{where}: {index}.weight after remove is not orig * mask")
        if pruneplug.is_pruned(net[index]):
            raise AssertionError(f"{where}: {index} is still pruned after remove")


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
    differing = sharded(0)  # rank 1 has one more tensor pruned: refused on both ranks, nothing written
    pruneplug.prune_global(targets(differing), "l1_unstructured", amount=0.5)
    if rank == 1:
        pruneplug.prune(differing[2], "bias", "l1_unstructured", amount=2)
    refused_on_both_ranks(
        lambda: pruneplug.save_sharded(differing, Path(folder) / "differing"),
        "differ in which tensors are pruned (2.bias)",
        rank,
        "models that differ in their pruning were saved",
    )
    pruneplug.pack_masks(net)  # saved from bit-packed shards: the checkpoint holds bool masks all the same
    pruneplug.save_sharded(net, path, overwrite=True)
    leftovers = [p.name for p in Path(folder).iterdir() if p.name.startswith(".")]
    if leftovers:
        raise AssertionError(f"temporary folders left behind: {leftovers}")
    copy = sharded(0)  # uneven rows (7 on 2 ranks: 4 and 3), pruned otherwise
    pruneplug.prune_global(targets(copy), "l1_unstructured", amount=0.1)
    pruneplug.prune(copy[2], "bias", "l1_unstructured", amount=1)
    copy.load_state_dict(net.state_dict())  # DTensor <name>_orig and <name>_mask keys
    check_equal(copy, reference(), "load_state_dict of an unevenly sharded pruned state dict")
    check_removed(copy, reference(), {0: net[0].weight_orig.placements, 2: net[2].weight_orig.placements}, "uneven")
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


def scenario_load_parallelized(rank: int, world: int, folder: str) -> None:
    """Load into a ``parallelize_module`` model on 2 ranks; then ``remove``, ``state_dict`` and a misfit on one rank."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    mesh = init_device_mesh("cpu", (world,))
    expected = reference()
    net = parallelize_module(model(), mesh, {"0": ColwiseParallel(), "2": RowwiseParallel()})
    placements = {index: net[index].weight.placements for index in (0, 2)}
    pruneplug.load_sharded(net, Path(folder) / "tp")
    check_equal(net, expected, "loaded into a parallelized model")
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(2))
    if not torch.allclose(net(x), expected(x), atol=1e-6):
        raise AssertionError("the parallelized model's forward differs")
    copy = parallelize_module(model(), mesh, {"0": ColwiseParallel(), "2": RowwiseParallel()})
    pruneplug.prune_global(targets(copy), "l1_unstructured", amount=0.1)
    pruneplug.prune(copy[2], "bias", "l1_unstructured", amount=1)
    copy.load_state_dict(net.state_dict())  # DTensor <name>_orig and <name>_mask keys
    check_equal(copy, expected, "load_state_dict of a sharded pruned state dict")
    pruneplug.load_pruned_state_dict(copy, {}, strict=False, mask_storage="packed")  # the masks it holds, packed
    check_packed(copy, "load_pruned_state_dict(mask_storage='packed')")
    check_equal(copy, expected, "after packing the held masks")
    fresh = parallelize_module(model(), mesh, {"0": ColwiseParallel(), "2": RowwiseParallel()})
    pruneplug.load_sharded(fresh, Path(folder) / "tp", mask_storage="packed")
    check_packed(fresh, "load_sharded(mask_storage='packed')")
    check_equal(fresh, expected, "loaded with packed masks")
    if not torch.allclose(fresh(x), expected(x), atol=1e-6):
        raise AssertionError("the forward with packed masks loaded differs")
    bad = model() if rank == 0 else nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 6))
    before = {key: value.clone() for key, value in bad.state_dict().items()}
    refused_on_both_ranks(
        lambda: pruneplug.load_sharded(bad, Path(folder) / "tp"),
        "2.weight_orig: shape (7, 8) in the checkpoint, (6, 8) in the model",
        rank,
        "a model that differs on one rank was loaded",
    )
    if pruneplug.is_pruned(bad[0]) or any(not torch.equal(v, before[k]) for k, v in bad.state_dict().items()):
        raise AssertionError("a failed load changed the model")
    check_removed(net, expected, placements, "parallelized")


SCENARIOS = {"save": scenario_save, "load": scenario_load, "load_parallelized": scenario_load_parallelized}


def test_saved_on_two_ranks_loads_on_four_ranks_and_in_one_process(run_ranks: RunRanks, tmp_path: Path) -> None:
    run_ranks(__file__, "save", 2, str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fsdp", "tp"]
    run_ranks(__file__, "load", 4, str(tmp_path))
    run_ranks(__file__, "load_parallelized", 2, str(tmp_path))
    expected = reference()
    for name in ("tp", "fsdp"):  # no process group: whole tensors
        net = pruneplug.load_sharded(model(), tmp_path / name)
        check_equal(net, expected, f"{name} loaded in one process", forward=True)
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    dcp_to_torch_save(tmp_path / "tp", tmp_path / "tp.pt")  # DCP's own conversion: a plain pruned state dict
    net = pruneplug.load_pruned_state_dict(model(), torch.load(tmp_path / "tp.pt", weights_only=True))
    check_equal(net, expected, "dcp_to_torch_save then load_pruned_state_dict", forward=True)


def test_a_misfit_changes_nothing(tmp_path: Path) -> None:
    pruneplug.save_sharded(reference(), tmp_path / "ckpt")
    wider = nn.Sequential(nn.Linear(5, 9), nn.ReLU(), nn.Linear(9, 7))
    before = {k: v.clone() for k, v in wider.state_dict().items()}
    with pytest.raises(pruneplug.CheckpointError, match=r"0.bias: shape \(8,\) in the checkpoint, \(9,\) in the"):
        pruneplug.load_sharded(wider, tmp_path / "ckpt")
    assert not pruneplug.is_pruned(wider[0])
    assert all(torch.equal(v, before[k]) for k, v in wider.state_dict().items())
    pruned_otherwise = model()
    pruneplug.prune(pruned_otherwise[0], "bias", "l1_unstructured", amount=1)
    with pytest.raises(pruneplug.CheckpointError, match="0.bias pruned, the checkpoint holds it unpruned"):
        pruneplug.load_sharded(pruned_otherwise, tmp_path / "ckpt")
    longer = nn.Sequential(*model(), nn.Linear(7, 2))
    with pytest.raises(pruneplug.CheckpointError, match=r"3.weight: not in the checkpoint; 3.bias: not in"):
        pruneplug.load_sharded(longer, tmp_path / "ckpt")
    no_bias = nn.Sequential(nn.Linear(5, 8, bias=False), nn.ReLU(), nn.Linear(8, 7))
    with pytest.raises(pruneplug.CheckpointError, match=r"0.bias: in the checkpoint, not in the model"):
        pruneplug.load_sharded(no_bias, tmp_path / "ckpt")
    assert not pruneplug.is_pruned(longer[0])
    shutil.copytree(tmp_path / "ckpt", tmp_path / "unfinished")
    (tmp_path / "unfinished" / ".metadata").unlink()
    with pytest.raises(pruneplug.CheckpointError, match=r"index of the checkpoint \(.metadata\) cannot be read"):
        pruneplug.load_sharded(model(), tmp_path / "unfinished")
    (tmp_path / "plain").mkdir()
    with pytest.raises(pruneplug.CheckpointError, match="pruneplug.json is missing") as raised:
        pruneplug.load_sharded(model(), tmp_path / "plain")
    assert str(raised.value).count(str(tmp_path)) == 1  # the folder named once
    with pytest.raises(pruneplug.CheckpointError, match="does not exist"):
        pruneplug.save_sharded(model(), tmp_path / "no" / "ckpt")
