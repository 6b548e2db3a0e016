"""pruneplug.Pruner on random schedules and step sequences (hypothesis): masks are monotone, counts exact."""

from __future__ import annotations

from typing import Any

import torch
from hypothesis import given, settings, strategies as st
from torch import nn

import pruneplug


@st.composite
def schedules(draw: st.DrawFn) -> dict[str, Any]:
    start = draw(st.integers(0, 6))
    end = draw(st.integers(start, start + 12))
    final = draw(st.floats(0.0, 0.99))
    initial = draw(st.floats(0.0, final))
    name = draw(st.sampled_from(["linear", "cubic", "exponential"]))
    return {
        "name": name,
        "initial": initial,
        "final": final,
        "start": start,
        "end": end,
        "every": draw(st.integers(1, 4)),
    }


@settings(max_examples=40, deadline=None)
@given(
    schedule=schedules(),
    steps=st.lists(st.integers(0, 24), min_size=1, max_size=12, unique=True).map(sorted),
    scope=st.sampled_from(["local", "global"]),
    masking=st.sampled_from(["reparametrize", "in_place"]),
)
def test_masks_only_lose_ones_and_reach_the_schedules_count_at_pruning_steps(
    schedule: dict[str, Any], steps: list[int], scope: str, masking: str
) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(7, 5), nn.Linear(5, 3))
    rules = [{"types": ["Linear"], "strategy": "l1_unstructured", "scope": scope, "params": {"amount": 0.5}}]
    pruner = pruneplug.Pruner(model, rules, schedule=schedule, masking=masking)  # type: ignore[arg-type]
    made = pruneplug.make_schedule(schedule)
    alive = {name: torch.ones_like(layer.weight, dtype=torch.bool) for name, layer in model.named_children()}
    for step in steps:
        pruner.step(step=step)
        masks = pruner.masks()
        now = {
            name: masks.get(f"{name}.weight", torch.ones_like(layer.weight, dtype=torch.bool))
            for name, layer in model.named_children()
        }
        for name, layer in model.named_children():
            assert not layer.weight.detach()[~now[name]].any(), (step, name)  # pruned entries are zero
        for name in alive:
            assert not (now[name] & ~alive[name]).any(), (step, name)  # no entry comes back
        if made.prunes_at(step):
            target = made.at(step)
            pruned = {name: int((~mask).sum()) for name, mask in now.items()}
            if scope == "local":
                for name, layer in model.named_children():
                    assert pruned[name] == round(target * layer.weight.numel()), (step, name)
            else:
                assert sum(pruned.values()) == round(target * 50), step
        alive = now
