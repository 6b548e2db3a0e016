"""pruneplug.Pruner under DistributedDataParallel: two gloo processes on localhost, checked against one process.

The test runs this file as a script twice (rank 0 and rank 1, each its own
process, so a hung rank fails the test at its timeout instead of hanging the
suite). Each rank builds the same seeded model, wraps it in
``DistributedDataParallel``, attaches a Pruner (``optimizer=`` an AdamW) and
trains on its own half of each batch; at every pruning step it saves every
mask, and at the end the weights. The test process then gathers the two
ranks' files and checks, for each scenario, that:

- the masks are the same on both ranks, bit for bit, at every pruning step;
- the weights are the same on both ranks, bit for bit (the gradients of the
  ``weight_orig`` parameters were all-reduced: the core keeps the parameter
  object DDP holds);
- pruned entries of the effective weights stay zero;
- the run equals one process training on the concatenated batch: the masks
  exactly (the L1 ranking's margin at each pruning step is checked to be far
  wider than the float difference), the weights within float tolerance;
- a random strategy (``random_unstructured``, its own seeded generator and
  torch's global one) draws the same masks on both ranks.
"""

from __future__ import annotations

import datetime
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import pruneplug
from pruneplug.storage.formats import MaskStorage
from pruneplug.storage.packed import plain

ROOT = Path(__file__).resolve().parents[2]
WORLD = 2
STEPS = 8
PER_RANK = 6  # rows of each rank's half of a batch
SCHEDULE = {"name": "cubic", "start": 1, "end": 7, "every": 2}  # pruning steps 1 (to 0 %: nothing), 3, 5 and 7
PRUNING_STEPS = (1, 3, 5, 7)
TIMEOUT = 120  # seconds a rank may take before the test kills it and fails


@dataclass(frozen=True)
class Scenario:
    """How the Pruner meets DDP: what it is given, how masks are stored, whether the model came pruned."""

    name: str
    target: str  # "module": Pruner(ddp.module, ...); "ddp": Pruner(ddp, ...) (names gain a "module." prefix)
    storage: MaskStorage
    pruned_before_wrap: bool  # pruned once before DDP wraps it: DDP then broadcasts the masks as buffers


SCENARIOS = (
    Scenario("module-bool", "module", "bool", False),
    Scenario("ddp-packed", "ddp", "packed", False),
    Scenario("prepruned-packed", "module", "packed", True),
)


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 10), nn.ReLU(), nn.Linear(10, 3))


def rules(prefix: str) -> list[dict[str, Any]]:
    """An L1 rule, a global random one with its own generator (seeded alike on every rank), one on torch's generator."""
    return [
        {"modules": [f"{prefix}0"], "strategy": "l1_unstructured", "params": {"amount": 0.75}},
        {
            "modules": [f"{prefix}2", f"{prefix}4"],
            "strategy": "random_unstructured",
            "scope": "global",
            "params": {"amount": 0.6, "generator": torch.Generator().manual_seed(7)},
        },
        {"modules": [f"{prefix}4"], "tensors": ["bias"], "strategy": "random_unstructured", "params": {"amount": 0.5}},
    ]


def batch(step: int) -> tuple[Tensor, Tensor]:
    """The whole batch of a step (both ranks' halves), from its own generator: torch's global one is not touched."""
    generator = torch.Generator().manual_seed(100 + step)
    inputs = torch.randn(WORLD * PER_RANK, 12, generator=generator)
    return inputs, torch.randint(0, 3, (WORLD * PER_RANK,), generator=generator)


def masks(model: nn.Module) -> dict[str, Tensor]:
    """Every mask of ``model`` as a plain bool tensor, by the qualified name of its tensor."""
    found = {}
    for name, module in model.named_modules():
        for tensor in ("weight", "bias"):
            mask = module._buffers.get(f"{tensor}_mask")
            if mask is not None:
                found[f"{name}.{tensor}"] = plain(mask).bool().clone()
    return found


def effective(model: nn.Module, names: list[str]) -> dict[str, Tensor]:
    """The effective (masked) tensors ``names`` of ``model``, what its forward uses."""
    found = {}
    for name in names:
        module, _, tensor = name.rpartition(".")
        found[name] = getattr(model.get_submodule(module), tensor).detach().clone()
    return found


def train(scenario: Scenario, rank: int | None) -> dict[str, Any]:
    """One scenario's run: DDP on ``rank``'s half of each batch, or one process on all of it (``rank=None``)."""
    model = mlp()
    if scenario.pruned_before_wrap:
        pruneplug.prune(model[2], "weight", "l1_unstructured", amount=0.25, mask_storage=scenario.storage)
    before = {id(parameter) for parameter in model.parameters()}
    forward: nn.Module = model if rank is None else nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.AdamW(forward.parameters(), lr=0.05, weight_decay=0.1)
    target, prefix = (forward, "module.") if scenario.target == "ddp" and rank is not None else (model, "")
    pruner = pruneplug.Pruner(
        target, rules(prefix), schedule=SCHEDULE, optimizer=optimizer, mask_storage=scenario.storage
    )
    rows = slice(None) if rank is None else slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    history: dict[int, dict[str, Tensor]] = {}
    margins: list[float] = []
    for step in range(STEPS):
        inputs, labels = batch(step)
        optimizer.zero_grad()
        nn.functional.cross_entropy(forward(inputs[rows]), labels[rows]).backward()
        optimizer.step()
        if step in PRUNING_STEPS:
            margins.append(l1_margin(model[0], pruner.target_sparsity(step)[0]))
        pruner.step()
        if step in PRUNING_STEPS:
            history[step] = masks(model)
    held = forward._module_parameters if isinstance(forward, nn.parallel.DistributedDataParallel) else []
    return {
        "masks": history,
        "weights": {k: v.detach().clone() for k, v in model.state_dict().items() if not k.endswith("_mask")},
        "effective": effective(model, list(history[PRUNING_STEPS[-1]])),
        "same_parameters": before == {id(p) for p in model.parameters()},
        # what DDP's reducer all-reduces: the parameters it listed when it wrapped the model
        "ddp_holds_them": rank is None or {id(p) for p in held} == {id(p) for p in model.parameters()},
        "margins": margins,
    }


def l1_margin(layer: nn.Module, target: float) -> float:
    """How far apart, in magnitude, the last entry an L1 prune to ``target`` takes and the first it keeps."""
    weight = layer.weight.detach().abs().reshape(-1)
    count = round(target * weight.numel())
    ordered = weight.sort().values
    if count in (0, weight.numel()):
        return float("inf")
    return float(ordered[count] - ordered[count - 1])


def worker(rank: int, port: int, out: Path) -> None:
    """One rank: join the gloo group on localhost, run every scenario, save what it saw to ``out``."""
    torch.distributed.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        torch.set_num_threads(1)
        torch.save({scenario.name: train(scenario, rank) for scenario in SCENARIOS}, out)
    finally:
        torch.distributed.destroy_process_group()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Both ranks' results, by scenario; each rank is this file run as a script."""
    folder = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    port = free_port()
    processes = [
        subprocess.Popen(
            [sys.executable, __file__, str(rank), str(port), str(folder / f"rank{rank}.pt")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(WORLD)
    ]
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=TIMEOUT)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    for rank, (process, output) in enumerate(zip(processes, outputs)):
        assert process.returncode == 0, f"rank {rank} failed:\n{output[-3000:]}"
    return [torch.load(folder / f"rank{rank}.pt", weights_only=False) for rank in range(WORLD)]


def single(scenario: Scenario) -> dict[str, Any]:
    torch.set_num_threads(1)
    return train(scenario, None)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_masks_and_weights_are_the_same_on_every_rank(ranks: list[dict[str, Any]], scenario: Scenario) -> None:
    first, second = (rank[scenario.name] for rank in ranks)
    assert list(first["masks"]) == list(PRUNING_STEPS)
    for step in PRUNING_STEPS:
        assert first["masks"][step].keys() == second["masks"][step].keys()
        for name, mask in first["masks"][step].items():
            assert torch.equal(mask, second["masks"][step][name]), (step, name)
    assert first["masks"][PRUNING_STEPS[-1]].keys() == {"0.weight", "2.weight", "4.weight", "4.bias"}
    for name, value in first["weights"].items():
        assert torch.equal(value, second["weights"][name]), name
    assert first["same_parameters"] and first["ddp_holds_them"]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_pruned_entries_stay_zero(ranks: list[dict[str, Any]], scenario: Scenario) -> None:
    result = ranks[0][scenario.name]
    final = result["masks"][PRUNING_STEPS[-1]]
    for name, value in result["effective"].items():
        assert not bool(value[~final[name]].any()), name
    assert 0.7 < 1 - final["0.weight"].float().mean().item() < 0.8  # the rules reached their final sparsity


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_ddp_equals_one_process_on_the_concatenated_batch(ranks: list[dict[str, Any]], scenario: Scenario) -> None:
    alone, distributed = single(scenario), ranks[0][scenario.name]
    # the L1 ranks are not tie-sensitive: the margin at each cut is far above the weights' float differences
    assert min(alone["margins"]) > 1e-4
    for step in PRUNING_STEPS:
        assert alone["masks"][step].keys() == distributed["masks"][step].keys()
        for name, mask in alone["masks"][step].items():
            assert torch.equal(mask, distributed["masks"][step][name]), (step, name)
    for name, value in alone["weights"].items():
        torch.testing.assert_close(distributed["weights"][name], value, rtol=1e-5, atol=1e-6, msg=name)


if __name__ == "__main__":
    worker(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))
