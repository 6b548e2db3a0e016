"""pruneplug.Pruner under automatic mixed precision: autocast, a GradScaler, and half-precision weights."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
from torch import nn

import pruneplug

from .test_pruner_training import OPTIMIZERS, SCHEDULE, batch, mlp

RULES: list[dict[str, Any]] = [
    {"types": ["Linear"], "strategy": "l1_unstructured", "scope": "global", "params": {"amount": 0.8}}
]


def amp_run(masking: pruneplug.Masking, steps: int = 12) -> tuple[pruneplug.Pruner, list[dict[str, torch.Tensor]]]:
    """Train under bfloat16 autocast with a GradScaler; the pruner's masks after each step."""
    model = mlp()
    optimizer = OPTIMIZERS["adamw"](model)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    pruner = pruneplug.Pruner(model, RULES, schedule=SCHEDULE, optimizer=optimizer, masking=masking)
    history = []
    for step in range(steps):
        inputs, labels = batch(step)
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(model(inputs), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        pruner.step()
        history.append(pruner.masks())
    return pruner, history


@pytest.mark.parametrize("masking", ["reparametrize", "in_place"])
def test_autocast_and_a_grad_scaler_reach_the_targets_with_float32_weights(masking: pruneplug.Masking) -> None:
    pruner, history = amp_run(masking)
    total = sum(layer.weight.numel() for layer in pruner.model.modules() if isinstance(layer, nn.Linear))
    assert pruner.sparsity() == [round(0.8 * total) / total]
    for earlier, later in itertools.pairwise(history):
        assert all(not (later[name] & ~earlier[name]).any() for name in earlier)  # masks only lose ones
    for name, mask in history[-1].items():
        module = pruner.model.get_submodule(name.rpartition(".")[0])
        assert module.weight.dtype == torch.float32 and not module.weight.detach()[~mask].any()


def test_autocast_runs_are_the_same_masked_either_way() -> None:
    _, reparametrized = amp_run("reparametrize")
    _, in_place = amp_run("in_place")
    for step, (a, b) in enumerate(zip(reparametrized, in_place)):
        assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a), step


@pytest.mark.parametrize("masking", ["reparametrize", "in_place"])
def test_bfloat16_weights_are_pruned_and_stay_zero(masking: pruneplug.Masking) -> None:
    model = mlp().to(torch.bfloat16)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    pruner = pruneplug.Pruner(model, RULES, schedule=SCHEDULE, optimizer=optimizer, masking=masking)
    for step in range(12):
        inputs, labels = batch(step)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs.to(torch.bfloat16)).float(), labels).backward()
        optimizer.step()
        pruner.step()
    masks = pruner.masks()
    assert set(masks) == {"0.weight", "2.weight", "4.weight"}
    for name, mask in masks.items():
        weight = model.get_submodule(name.rpartition(".")[0]).weight
        assert weight.dtype == torch.bfloat16 and not weight.detach()[~mask].any(), name
