"""Pruned FSDP2 (``fully_shard``) modules on 2 gloo ranks, against one process on the unsharded model.

Each rank builds the same small MLP from a seed; one copy is sharded with
``fully_shard`` (its first Linear on its own, the second only through the
root's call; 7 rows on 2 ranks shard 4 and 3), the other stays whole in
the rank's process as the reference. Both are pruned globally and trained
with AdamW on the same batches: the masks, outputs and weights must agree
at every step, the pruned entries must stay zero, and ``remove`` must hand
FSDP back a plain parameter. ``pruneplug.prune`` on the Linear sharded only
through its parent takes the same path.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

import pruneplug

RunRanks = Callable[..., None]


def models() -> tuple[nn.Sequential, nn.Sequential]:
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    sharded = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    reference = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    reference.load_state_dict(sharded.state_dict())
    fully_shard(sharded[0])
    fully_shard(sharded)  # sharded[2] is sharded through its parent only
    return sharded, reference


def targets(model: nn.Sequential) -> list[tuple[nn.Module, str]]:
    return [(model[0], "weight"), (model[2], "weight")]


def check_masks(sharded: nn.Sequential, reference: nn.Sequential, when: str) -> None:
    from torch.distributed.tensor import DTensor

    for (module, _), (expected, _) in zip(targets(sharded), targets(reference), strict=True):
        mask = module.weight_mask
        if not isinstance(mask, DTensor) or mask.placements != module.weight_orig.placements:
            raise AssertionError(f"{when}: the mask is not a DTensor placed like its weight: {mask!r}")
        if not torch.equal(mask.full_tensor(), expected.weight_mask.bool()):
            raise AssertionError(f"{when}: the gathered mask differs from one process's")


def scenario_train(rank: int, world: int, storage: str = "bool") -> None:
    from pruneplug.core.cache import held
    from pruneplug.core.state import find_hook
    from pruneplug.storage.packed import PackedMask

    sharded, reference = models()
    pruneplug.prune_global(targets(sharded), "l1_unstructured", amount=0.5, mask_storage=storage)
    pruneplug.prune_global(targets(reference), "l1_unstructured", amount=0.5)
    check_masks(sharded, reference, "first prune")
    kinds = {type(module.weight_mask.to_local()) for module, _ in targets(sharded)}
    if kinds != {PackedMask if storage == "packed" else torch.Tensor}:
        raise AssertionError(f"mask_storage={storage!r}: the masks' shards are {kinds}")
    optimizers = [torch.optim.AdamW(model.parameters(), lr=0.05) for model in (sharded, reference)]
    batches = torch.Generator().manual_seed(1)
    for step in range(3):
        x = torch.randn(8, 5, generator=batches)
        out, expected = sharded(x), reference(x)
        if not torch.allclose(out, expected, atol=1e-6):
            raise AssertionError(f"step {step}: the FSDP2 forward differs by {(out - expected).abs().max()}")
        out.square().sum().backward()
        expected.square().sum().backward()
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad()
    for (module, _), (expected_module, _) in zip(targets(sharded), targets(reference), strict=True):
        orig = module.weight_orig.full_tensor()
        if not torch.allclose(orig, expected_module.weight_orig, rtol=1e-5, atol=1e-6):
            raise AssertionError("after training, weight_orig differs from one process's")
        weight = module.weight.full_tensor()  # outside the forward: the sharded product
        if weight[~module.weight_mask.full_tensor()].any():
            raise AssertionError("a pruned entry of the weight is not zero after training")
    pruneplug.prune_global(targets(sharded), "l1_unstructured", amount=0.3)
    pruneplug.prune_global(targets(reference), "l1_unstructured", amount=0.3)
    check_masks(sharded, reference, "second prune")
    sharded.eval()
    with torch.no_grad():  # inference: the gathered weight's product is never kept past the forward
        sharded(torch.randn(2, 5, generator=batches))
    for module, _ in targets(sharded):
        found = find_hook(module, "weight")
        if found is None or held(found[1]) is not None:
            raise AssertionError("an FSDP2 module kept its gathered masked weight after an inference forward")
    sharded.reshard()  # (FSDP2 leaves the root's parameters gathered after a forward without backward)
    sharded.train()
    for pair, expected_pair in zip(targets(sharded), targets(reference), strict=True):
        pruneplug.remove(*pair)
        pruneplug.remove(*expected_pair)
    names = sorted(name for name, _ in sharded.named_parameters())
    if names != ["0.bias", "0.weight", "2.bias", "2.weight"]:
        raise AssertionError(f"after remove, the parameters are {names}")
    x = torch.randn(8, 5, generator=batches)
    out = sharded(x)
    out.sum().backward()  # FSDP all-gathers and reduce-scatters "weight" again
    if not torch.allclose(out, reference(x), atol=1e-6):
        raise AssertionError("after remove, the FSDP2 forward differs")


def scenario_tied_refused(rank: int, world: int) -> None:
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model[1].weight = model[0].weight
    fully_shard(model)
    try:
        pruneplug.prune_global([(model[0], "weight")], "l1_unstructured", amount=0.5)
    except pruneplug.IncompatibleStrategyError as error:
        if "tied weights" not in str(error):
            raise
    else:
        raise AssertionError("pruning a tied FSDP2 parameter was not refused")
    if pruneplug.is_pruned(model[0]) or "weight" not in model[0]._parameters:
        raise AssertionError("a refused prune changed the module")
    model(torch.ones(2, 4)).sum().backward()  # FSDP still swaps "weight"


def scenario_prune_one(rank: int, world: int) -> None:
    """``pruneplug.prune`` on the Linear sharded only through its parent: the same mask, forward and gradients."""
    sharded, reference = models()
    pruneplug.prune(sharded[2], "weight", "l1_unstructured", amount=0.4)
    pruneplug.prune(reference[2], "weight", "l1_unstructured", amount=0.4)
    mask = sharded[2].weight_mask
    if not torch.equal(mask.full_tensor(), reference[2].weight_mask.bool()):
        raise AssertionError("the gathered mask differs from one process's")
    x = torch.randn(8, 5, generator=torch.Generator().manual_seed(2))
    out, expected = sharded(x), reference(x)
    if not torch.allclose(out, expected, atol=1e-6):
        raise AssertionError(f"the FSDP2 forward differs by {(out - expected).abs().max()}")
    out.square().sum().backward()
    expected.square().sum().backward()
    grad = sharded[2].weight_orig.grad.full_tensor()
    if not torch.allclose(grad, reference[2].weight_orig.grad, rtol=1e-5, atol=1e-6) or grad[~mask.full_tensor()].any():
        raise AssertionError("the gradient of weight_orig differs from one process's or reaches a pruned entry")
    pruneplug.remove(sharded[2], "weight")
    pruneplug.remove(reference[2], "weight")
    out = sharded(x)
    out.sum().backward()  # FSDP swaps "weight" again
    if not torch.allclose(out, reference(x), atol=1e-6):
        raise AssertionError("after remove, the FSDP2 forward differs")


def scenario_not_kept(rank: int, world: int) -> None:
    """Between forward and backward no masked weight is alive (autograd keeps how to remake it); the gradients
    are one process's. Without the saved-tensor hooks the same forward keeps one per pruned layer."""
    from pruneplug.core import fsdp

    sharded, reference = models()
    pruneplug.prune_global(targets(sharded), "l1_unstructured", amount=0.5)
    pruneplug.prune_global(targets(reference), "l1_unstructured", amount=0.5)
    x = torch.randn(8, 5, generator=torch.Generator().manual_seed(3), requires_grad=True)
    for hooked in (True, False):
        for module, _ in targets(sharded):
            fsdp.recompute_masked_weights(module, on=hooked)
        out = sharded(x)
        alive = [product for product in fsdp._products.values() if product.made() is not None]
        if len(alive) != (0 if hooked else 2):
            raise AssertionError(f"hooks {hooked}: {len(alive)} masked weights alive between forward and backward")
        del alive
        out.square().sum().backward()
        expected_x = x.detach().clone().requires_grad_(True)
        reference(expected_x).square().sum().backward()
        if not torch.allclose(x.grad, expected_x.grad, atol=1e-6):
            raise AssertionError(f"hooks {hooked}: the input's gradient differs from one process's")
        for (module, _), (expected, _) in zip(targets(sharded), targets(reference), strict=True):
            if not torch.allclose(module.weight_orig.grad.full_tensor(), expected.weight_orig.grad, atol=1e-6):
                raise AssertionError(f"hooks {hooked}: a weight's gradient differs from one process's")
        x.grad = None
        for model in (sharded, reference):
            model.zero_grad()


SCENARIOS = {
    "train": scenario_train,
    "tied_refused": scenario_tied_refused,
    "prune_one": scenario_prune_one,
    "not_kept": scenario_not_kept,
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_fsdp2_pruned_on_two_ranks(run_ranks: RunRanks, scenario: str) -> None:
    run_ranks(__file__, scenario, 2)


def test_fsdp2_trained_with_bit_packed_masks(run_ranks: RunRanks) -> None:
    """Each rank packs its shard of the masks; FSDP2 gathers them unpacked for its forward and backward."""
    run_ranks(__file__, "train", 2, "packed")
