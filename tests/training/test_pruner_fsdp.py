"""A :class:`pruneplug.Pruner` on an FSDP2 (``fully_shard``) model, 2 gloo ranks, against one process.

Each rank trains the sharded model and an unsharded copy on the same
batches with a global L1 rule on a cubic schedule, in both masking modes
(and reparametrized with bit-packed masks, each rank packing its shard):
at every step the outputs, the pruner's masks (gathered) and, at the end,
the weights must agree with the copy's.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

import pruneplug

RunRanks = Callable[..., None]
RULES = [{"modules": ["0", "2"], "strategy": "l1_unstructured", "scope": "global", "params": {"amount": 0.6}}]
SCHEDULE = {"name": "cubic", "start": 0, "end": 4, "every": 2}  # prunes at steps 0 (nothing), 2 and 4


def gathered(tensor: Tensor) -> Tensor:
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def train(masking: str, mask_storage: str | None = None) -> nn.Sequential:
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    sharded = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    reference = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    reference.load_state_dict(sharded.state_dict())
    fully_shard(sharded[0])
    fully_shard(sharded)
    runs = []
    for model in (sharded, reference):
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
        pruner = pruneplug.Pruner(
            model, RULES, schedule=SCHEDULE, optimizer=optimizer, masking=masking, mask_storage=mask_storage
        )
        runs.append((model, optimizer, pruner))
    batches = torch.Generator().manual_seed(1)
    for step in range(6):
        x = torch.randn(8, 5, generator=batches)
        outputs = []
        for model, optimizer, pruner in runs:
            out = model(x)
            outputs.append(out.detach())
            out.square().sum().backward()
            optimizer.step()
            optimizer.zero_grad()
            pruner.step()
        if not torch.allclose(outputs[0], outputs[1], atol=1e-5):
            raise AssertionError(f"{masking}, step {step}: the FSDP2 output differs")
        masks, expected = runs[0][2].masks(), runs[1][2].masks()
        if sorted(masks) != sorted(expected) or (step >= 2 and not expected):
            raise AssertionError(f"{masking}, step {step}: masks of {sorted(masks)}, one process {sorted(expected)}")
        for name, mask in expected.items():
            if not torch.equal(gathered(masks[name]).bool(), mask.bool()):
                raise AssertionError(f"{masking}, step {step}: the mask of {name} differs")
    for (name, value), expected in zip(sharded.state_dict().items(), reference.state_dict().values(), strict=True):
        if not torch.allclose(gathered(value).float(), expected.float(), rtol=1e-5, atol=1e-6):
            raise AssertionError(f"{masking}: {name} differs after training")
    return sharded


def scenario_reparametrize(rank: int, world: int) -> None:
    train("reparametrize")


def scenario_in_place(rank: int, world: int) -> None:
    train("in_place")


def scenario_packed(rank: int, world: int) -> None:
    from pruneplug.storage.packed import PackedMask

    sharded = train("reparametrize", "packed")
    kinds = {type(sharded[index].weight_mask.to_local()) for index in (0, 2)}
    if kinds != {PackedMask}:
        raise AssertionError(f"the Pruner's masks of FSDP2 shards are {kinds}, not bit-packed")


SCENARIOS = {"reparametrize": scenario_reparametrize, "in_place": scenario_in_place, "packed": scenario_packed}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_pruner_on_fsdp2_on_two_ranks(run_ranks: RunRanks, scenario: str) -> None:
    run_ranks(__file__, scenario, 2)
