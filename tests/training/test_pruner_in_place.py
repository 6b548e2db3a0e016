"""pruneplug.Pruner with ``masking="in_place"``: the same run as the reparametrized one, with plain weights."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import pruneplug
from pruneplug.plans import PlanError

from .test_pruner_training import OPTIMIZERS, SCHEDULE, batch, mlp, train_step

RULES: list[dict[str, Any]] = [
    {"modules": ["0"], "strategy": "l1_unstructured", "params": {"amount": 0.75}},
    {"modules": ["2"], "strategy": "ln_structured", "params": {"amount": 0.5, "n": 2, "dim": 0}},
    {"modules": ["2", "4"], "strategy": "random_unstructured", "scope": "global", "params": {"amount": 0.9}},
]  # 2.weight: a structured and an unstructured rule on one tensor (the entries the one pruned, the other skips)
LINEARS = ("0.weight", "2.weight", "4.weight")


def effective(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights and biases the forward uses (``module.weight``, masked or plain), by name."""
    return {
        f"{name}.{tensor}": getattr(module, tensor).detach().clone()
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        for tensor in ("weight", "bias")
    }


@pytest.mark.parametrize("kind", list(OPTIMIZERS))
def test_in_place_runs_bit_identical_to_reparametrized_with_plain_weights(kind: str) -> None:
    runs: dict[str, list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]] = {}
    for masking in ("reparametrize", "in_place"):
        torch.manual_seed(5)
        model = mlp()
        optimizer = OPTIMIZERS[kind](model)
        pruner = pruneplug.Pruner(model, RULES, schedule=SCHEDULE, optimizer=optimizer, masking=masking)
        history = []
        for step in range(12):
            train_step(model, optimizer, step)
            pruner.step()
            history.append((pruner.masks(), effective(model)))
        runs[masking] = history
        if masking == "in_place":
            assert not pruneplug.is_pruned(model)  # plain parameters all along
            assert all(name in dict(model.named_parameters()) for name in LINEARS)
    for step, ((masks, weights), (masks_in_place, weights_in_place)) in enumerate(
        zip(runs["reparametrize"], runs["in_place"])
    ):
        assert masks.keys() == masks_in_place.keys(), step
        assert all(torch.equal(masks[name], masks_in_place[name]) for name in masks), step
        assert all(torch.equal(weights[name], weights_in_place[name]) for name in weights), step
    final_masks, final_weights = runs["in_place"][-1]
    for name, mask in final_masks.items():
        assert not final_weights[name][~mask].any(), name  # pruned entries are zero after every step
    assert set(final_masks) == set(LINEARS)


def test_the_weights_are_masked_again_after_each_optimizer_step() -> None:
    model = mlp()
    optimizer = OPTIMIZERS["adamw"](model)
    rules = RULES[:1]
    pruner = pruneplug.Pruner(model, rules, schedule={"name": "one_shot", "start": 0}, masking="in_place")
    train_step(model, optimizer, 0)
    pruner.step()
    gone = ~pruner.masks()["0.weight"]
    assert int(gone.sum()) == 144
    train_step(model, optimizer, 1)
    assert model[0].weight.detach()[gone].any()  # AdamW moved the pruned entries...
    pruner.step()
    assert not model[0].weight.detach()[gone].any()  # ... and the pruner's step set them back to zero


def test_a_model_pruned_already_is_taken_over_with_its_parameters_kept() -> None:
    model = mlp()
    pruneplug.prune(model[0], "weight", "l1_unstructured", amount=0.25)
    pruneplug.prune(model[0], "bias", "l1_unstructured", amount=0.5)
    original = model[0].weight_orig
    before = {"0.weight": model[0].weight_mask.clone(), "0.bias": model[0].bias_mask.clone()}
    masked = model[0].weight.detach().clone()
    pruner = pruneplug.Pruner(model, RULES[:1], schedule={"name": "linear", "end": 4}, masking="in_place")
    assert not pruneplug.is_pruned(model)
    assert model[0].weight is original  # the optimizer's parameter object stays
    assert torch.equal(model[0].weight.detach(), masked)
    masks = pruner.masks()
    assert masks.keys() == before.keys() and all(torch.equal(masks[k], before[k]) for k in masks)
    assert pruner.sparsity() == [0.25]  # what is pruned already counts toward the target
    for _ in range(5):
        pruner.step()
    assert pruner.sparsity() == [0.75] and int((~pruner.masks()["0.weight"]).sum()) == 144
    assert torch.equal(pruner.masks()["0.bias"], before["0.bias"])


def test_reparametrize_gives_the_model_its_masks_back() -> None:
    model = mlp()
    optimizer = OPTIMIZERS["sgd-momentum"](model)
    options: dict[str, Any] = {"masking": "in_place", "mask_storage": "packed", "optimizer": optimizer}
    pruner = pruneplug.Pruner(model, RULES, schedule=SCHEDULE, **options)
    for step in range(10):
        train_step(model, optimizer, step)
        pruner.step()
    masks, inputs = pruner.masks(), batch(0)[0]
    expected = model(inputs)
    pruner.reparametrize()
    assert pruner.masking == "reparametrize" and pruner.masks().keys() == masks.keys()
    assert isinstance(model[0].weight_mask, pruneplug.PackedMask)
    assert all(torch.equal(pruner.masks()[name], masks[name]) for name in masks)
    assert torch.equal(model(inputs), expected)
    assert pruner.sparsity() == [0.75, 0.5, round(0.9 * 190) / 190]  # 2.weight and 4.weight: 190 entries


def test_a_failed_in_place_step_keeps_the_masks_and_applies_them(monkeypatch: pytest.MonkeyPatch) -> None:
    model = mlp()
    optimizer = OPTIMIZERS["adamw"](model)
    pruner = pruneplug.Pruner(model, RULES[:1], schedule={"name": "linear", "end": 4}, masking="in_place")
    pruner.step()
    pruner.step()
    masks = pruner.masks()
    train_step(model, optimizer, 2)
    real = pruneplug.training.pruner.prune

    def failing(module: nn.Module, name: str, strategy: str, **params: object) -> nn.Module:
        if strategy != "custom_from_mask":
            raise pruneplug.StrategyFailedError("it broke", strategy=strategy)
        return real(module, name, strategy, **params)  # type: ignore[arg-type]

    monkeypatch.setattr(pruneplug.training.pruner, "prune", failing)
    with pytest.raises(PlanError, match="it broke"):
        pruner.step()
    assert pruner.current_step == 2 and not pruneplug.is_pruned(model)
    assert all(torch.equal(pruner.masks()[name], masks[name]) for name in masks)
    assert not model[0].weight.detach()[~masks["0.weight"]].any()  # the masks held before are applied


def test_bad_masking_and_mismatched_states_are_refused_naming_the_field() -> None:
    with pytest.raises(PlanError, match="masking must be one of 'reparametrize', 'in_place'") as caught:
        pruneplug.Pruner(mlp(), RULES, schedule=SCHEDULE, masking="hooks")  # type: ignore[arg-type]
    assert caught.value.field == "masking"
    pruner = pruneplug.Pruner(mlp(), RULES[:1], schedule=SCHEDULE, masking="in_place")
    for _ in range(4):
        pruner.step()
    state = pruner.state_dict()
    assert state["masks"].keys() == {"0.weight"} and state["masks"]["0.weight"].dtype == torch.bool
    reparametrized = pruneplug.Pruner(mlp(), RULES[:1], schedule=SCHEDULE)
    with pytest.raises(PlanError, match="masking='in_place'") as caught:
        reparametrized.load_state_dict(state)
    assert caught.value.field == "masking"
    fresh = pruneplug.Pruner(mlp(), RULES[:1], schedule=SCHEDULE, masking="in_place")
    for bad, message in (
        ({"0.weight": torch.ones(3, 3, dtype=torch.bool)}, "shape"),
        ({"9.weight": torch.ones(16, 12, dtype=torch.bool)}, "no module of the rules"),
        ({"2.weight": torch.ones(10, 16, dtype=torch.bool)}, "no module of the rules"),  # a module no rule selects
        (None, "holds its masks"),
        ({"0.weight": torch.ones(16, 12)}, "bool tensor"),
    ):
        with pytest.raises(PlanError, match=message) as caught:
            fresh.load_state_dict({**state, "masks": bad})
        assert caught.value.field == "masks" and fresh.current_step == 0 and fresh.masks() == {}
    fresh.load_state_dict(state)
    assert fresh.current_step == 4 and torch.equal(fresh.masks()["0.weight"], state["masks"]["0.weight"])
    assert not fresh.model[0].weight.detach()[~state["masks"]["0.weight"]].any()  # type: ignore[index]


def test_the_held_masks_follow_the_model_to_another_dtype() -> None:
    model = mlp()
    pruner = pruneplug.Pruner(model, RULES[:1], schedule={"name": "one_shot", "start": 0}, masking="in_place")
    pruner.step()
    model.to(torch.float64)
    with torch.no_grad():
        model[0].weight.add_(1.0)  # what an optimizer step might do
    pruner.apply_masks()
    gone = ~pruner.masks()["0.weight"]
    assert int(gone.sum()) == 144 and not model[0].weight.detach()[gone].any()
    assert pruner._held["0.weight"].mask.dtype == torch.float64  # multiplied in the weight's dtype again
