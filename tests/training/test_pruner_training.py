"""pruneplug.Pruner in a training loop: the optimizer's state, remove(), resuming bit for bit, gradient accumulation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import pruneplug

RULES: list[dict[str, Any]] = [
    {"modules": ["0"], "strategy": "l1_unstructured", "params": {"amount": 0.75}},
    {"modules": ["2", "4"], "strategy": "random_unstructured", "scope": "global", "params": {"amount": 0.6}},
]
SCHEDULE = {"name": "cubic", "start": 1, "end": 9, "every": 2}

Optimizers = Callable[[nn.Module], torch.optim.Optimizer]
OPTIMIZERS: dict[str, Optimizers] = {
    "sgd-momentum": lambda m: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=0.01),
    "adamw": lambda m: torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.1),
}


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 10), nn.ReLU(), nn.Linear(10, 3))


def batch(step: int, micro: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The data of one (micro-)batch: a function of the step alone, so a resumed run sees the same."""
    generator = torch.Generator().manual_seed(1000 * step + micro)
    return torch.randn(8, 12, generator=generator), torch.randint(0, 3, (8,), generator=generator)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, step: int, micro_batches: int = 1) -> None:
    optimizer.zero_grad()
    for micro in range(micro_batches):
        inputs, labels = batch(step, micro)
        (nn.functional.cross_entropy(model(inputs), labels) / micro_batches).backward()
    optimizer.step()


def dead(model: nn.Module) -> dict[str, torch.Tensor]:
    """Each pruned weight's bool mask of pruned entries."""
    return {
        name: ~module.weight_mask.bool()
        for name, module in model.named_modules()
        if pruneplug.is_pruned(module) and hasattr(module, "weight_mask")
    }


@pytest.mark.parametrize("kind", list(OPTIMIZERS))
def test_the_optimizers_state_is_zeroed_where_a_step_prunes_and_pruned_weights_stay_zero(kind: str) -> None:
    model = mlp()
    optimizer = OPTIMIZERS[kind](model)
    pruner = pruneplug.Pruner(model, RULES, schedule=SCHEDULE, optimizer=optimizer)
    for step in range(12):
        train_step(model, optimizer, step)
        before = dead(model)
        pruner.step()
        for name, gone in dead(model).items():
            module = model.get_submodule(name)
            newly = gone & ~before.get(name, torch.zeros_like(gone))
            state = optimizer.state[module.weight_orig]
            tensors = [value for value in state.values() if value.shape == module.weight_orig.shape]
            assert tensors, (kind, sorted(state))
            for value in tensors:
                assert not value[newly].any(), (kind, step, name)
            assert not module.weight[gone].any(), (kind, step, name)  # the effective weight
    assert pruner.sparsity() == [pytest.approx(144 / 192), pytest.approx(114 / 190)]
    masks = dead(model)
    pruneplug.remove(model)
    for name, gone in masks.items():
        weight = model.get_submodule(name).weight
        assert isinstance(weight, nn.Parameter) and not weight[gone].any()


def test_the_state_of_a_bias_a_strategy_prunes_with_its_weight_is_zeroed_too() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2, bias=False))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()
    bias = model[0].bias
    rule = {"modules": ["0"], "tensors": ["weight"], "strategy": "ln_structured"}
    rule["params"] = {"amount": 0.5, "n": 1, "dim": 0, "prune_bias": True}
    other = {"modules": ["2"], "strategy": "l1_unstructured", "params": {"amount": 0.5}}  # a module without a bias
    schedule = {"name": "one_shot", "start": 0}
    pruner = pruneplug.Pruner(model, [rule, other], schedule=schedule, optimizer=optimizer)
    pruner.step()
    pruned = ~model[0].bias_mask
    assert int(pruned.sum()) == 3
    momentum = optimizer.state[bias]["momentum_buffer"]
    assert bool((momentum[pruned] == 0).all()) and bool((momentum[~pruned] != 0).all())


def test_without_the_optimizer_its_state_keeps_the_pruned_entries() -> None:
    """What the optimizer argument is for: momentum left alone keeps moving the pruned weights' originals."""
    model = mlp()
    optimizer = OPTIMIZERS["sgd-momentum"](model)
    pruner = pruneplug.Pruner(model, RULES[:1], schedule=SCHEDULE)
    for step in range(4):
        train_step(model, optimizer, step)
        pruner.step()
    gone = ~model[0].weight_mask
    assert optimizer.state[model[0].weight_orig]["momentum_buffer"][gone].any()


def run(tmp_path: Path, steps: int, *, stop_at: int | None = None, micro_batches: int = 1, **options: Any) -> nn.Module:
    """Train ``steps`` optimizer steps with the pruner; with ``stop_at``, save there and go on with new objects."""
    model = mlp()
    optimizer = OPTIMIZERS["adamw"](model)
    pruner = pruneplug.Pruner(model, RULES, schedule=SCHEDULE, optimizer=optimizer, **options)
    for step in range(steps):
        if step == stop_at:
            torch.save(
                {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "pruner": pruner.state_dict()},
                tmp_path / "checkpoint.pt",
            )
            torch.manual_seed(1234)  # the generator moves on in between: loading puts it back
            saved = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
            model = mlp()
            optimizer = OPTIMIZERS["adamw"](model)  # made before the masks, on the parameters in their first order
            pruneplug.load_pruned_state_dict(model, saved["model"], mask_storage=options.get("mask_storage"))
            optimizer.load_state_dict(saved["optimizer"])
            pruner = pruneplug.Pruner(model, RULES, schedule=SCHEDULE, optimizer=optimizer, **options)
            pruner.load_state_dict(saved["pruner"])
            assert pruner.current_step == stop_at
        train_step(model, optimizer, step, micro_batches)
        pruner.step()
    assert pruner.current_step == steps
    return model


@pytest.mark.parametrize(
    "options", [{}, {"mask_storage": "packed"}, {"masking": "in_place"}], ids=["bool", "packed", "in-place"]
)
def test_a_run_saved_and_resumed_is_bit_identical_to_one_that_was_not(tmp_path: Path, options: dict[str, Any]) -> None:
    torch.manual_seed(7)
    trained = run(tmp_path, 12, **options)
    whole = trained.state_dict()
    for stop_at in (4, 5):  # saved after a pruning step, and after a step that did not prune
        torch.manual_seed(7)
        resumed = run(tmp_path, 12, stop_at=stop_at, **options).state_dict()
        assert whole.keys() == resumed.keys()
        for key in whole:
            assert torch.equal(whole[key], resumed[key]), (stop_at, key)
    if "masking" in options:  # plain weights: the masks are the pruner's, in its state_dict
        assert not pruneplug.is_pruned(trained) and "0.weight" in whole
    else:
        assert isinstance(trained[0].weight_mask, pruneplug.PackedMask) == ("mask_storage" in options)


def test_gradient_accumulation_counts_optimizer_steps(tmp_path: Path) -> None:
    torch.manual_seed(7)
    whole = run(tmp_path, 10, micro_batches=3).state_dict()
    torch.manual_seed(7)
    resumed = run(tmp_path, 10, stop_at=6, micro_batches=3).state_dict()
    assert all(torch.equal(whole[key], resumed[key]) for key in whole)
    assert int((~whole["0.weight_mask"]).sum()) == 144  # the final 0.75 of 192, reached at optimizer step 9


def test_loading_a_state_of_other_rules_or_schedules_is_refused_and_changes_nothing() -> None:
    model = mlp()
    pruner = pruneplug.Pruner(model, RULES, schedule=SCHEDULE)
    pruner.step()
    state = pruner.state_dict()
    other = pruneplug.Pruner(mlp(), RULES, schedule={**SCHEDULE, "every": 1})
    with pytest.raises(pruneplug.PlanError, match="schedule") as caught:
        other.load_state_dict(state)
    assert caught.value.rule == 0 and other.current_step == 0
    fewer = pruneplug.Pruner(mlp(), RULES[:1], schedule=SCHEDULE)
    with pytest.raises(pruneplug.PlanError, match="2 rules"):
        fewer.load_state_dict(state)
    with pytest.raises(pruneplug.PlanError, match="version"):
        fewer.load_state_dict({"step": 3})
    same = pruneplug.Pruner(mlp(), RULES, schedule=SCHEDULE)
    same.load_state_dict(state)
    assert same.current_step == 1 and isinstance(state["rng_state"], torch.Tensor)
    assert fewer.state_dict()["rng_state"] is None  # l1_unstructured draws no random numbers


def test_a_rules_own_generator_is_saved_and_put_back() -> None:
    generator = torch.Generator().manual_seed(3)
    rules = [
        {"types": ["Linear"], "strategy": "random_unstructured", "params": {"amount": 0.5, "generator": generator}}
    ]
    pruner = pruneplug.Pruner(mlp(), rules, schedule={"name": "linear", "end": 4})
    pruner.step()
    pruner.step()
    state = pruner.state_dict()
    drawn = torch.rand(4, generator=generator)
    pruner.load_state_dict(state)
    assert torch.equal(torch.rand(4, generator=generator), drawn)
    with pytest.raises(pruneplug.PlanError, match="generator"):
        pruner.load_state_dict({**state, "generators": []})
