"""pruneplug.Pruner with ``torch.compile``: how often changing masks recompiles the model.

Dynamo runs here with a backend of the test's own, which runs the captured
graph eagerly (no compiler needed) and counts what it compiled and each call
of a compiled graph: a step whose forward did not call one ran outside the
compiled code. Masks change only at pruning steps, and there the model is
recompiled once: every prune installs its hook again, under a new key of the
module's ``_forward_pre_hooks``, and Dynamo guards on those keys (the
guard failure reads ``list(dict.keys(fn._modules['0'].__dict__['_forward_pre_hooks']))[0] == 10``).
Steps that do not prune never recompile. After ``recompile_limit`` (8)
recompilations of the model's frame Dynamo gives up on it and runs it
eagerly: the strict xfail below records that. With ``masking="in_place"``
the model keeps plain parameters and no hooks, and it is compiled once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
import torch._dynamo
from torch import nn

import pruneplug

RULES = [{"types": ["Linear"], "strategy": "l1_unstructured", "scope": "global", "params": {"amount": 0.9}}]


@dataclass
class Counting:
    """A Dynamo backend that runs the captured graph as it is, counting graphs compiled and calls of them."""

    compiled: int = 0
    calls: int = 0
    per_step: list[tuple[int, int]] = field(default_factory=list)  # (compiled, calls) after each step

    def __call__(self, graph: torch.fx.GraphModule, inputs: list[Any]) -> Callable[..., Any]:
        self.compiled += 1

        def run(*args: Any) -> Any:
            self.calls += 1
            return graph.forward(*args)

        return run


def train(
    storage: str, steps: int, every: int, end: int, masking: pruneplug.Masking = "reparametrize"
) -> tuple[Counting, list[bool]]:
    """Train a compiled MLP with a Pruner whose linear schedule prunes every ``every`` steps until ``end``.

    Returns the backend's counts and, per step, whether that step's ``pruner.step()`` pruned.
    """
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    schedule = {"name": "linear", "initial": 0.1, "start": 0, "end": end, "every": every}
    pruner = pruneplug.Pruner(
        model,
        RULES,
        schedule=schedule,
        optimizer=optimizer,
        mask_storage=storage,  # type: ignore[arg-type]
        masking=masking,
    )
    backend = Counting()
    compiled = torch.compile(model, backend=backend)
    inputs, labels = torch.randn(8, 16), torch.randint(0, 4, (8,))
    pruned = []
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(compiled(inputs), labels).backward()
        optimizer.step()
        pruned.append(pruner.schedules[0].prunes_at(pruner.current_step))
        pruner.step()
        backend.per_step.append((backend.compiled, backend.calls))
    torch._dynamo.reset()
    return backend, pruned


@pytest.mark.parametrize("storage", ["bool", "packed"])
def test_only_the_forward_after_a_pruning_step_recompiles_at_most_once(storage: str) -> None:
    steps, every = 22, 5  # pruning steps 0, 5, 10, 15, 20: under Dynamo's recompile_limit (8)
    backend, pruned = train(storage, steps, every, end=20)
    assert sum(pruned) == 5
    compiled = [count for count, _ in backend.per_step]
    assert compiled[0] == 1  # the dense model, compiled at the first forward
    for step in range(1, steps):
        added = compiled[step] - compiled[step - 1]
        if pruned[step - 1]:  # the masks changed after the last forward
            assert added <= 1, step
        else:
            assert added == 0, step
    assert compiled[-1] <= 1 + sum(pruned[:-1])
    assert [calls for _, calls in backend.per_step] == list(range(1, steps + 1))  # every forward ran compiled


@pytest.mark.xfail(
    strict=True,
    reason=(
        "each prune registers its hook again under a new key of _forward_pre_hooks, a Dynamo guard: one "
        "recompilation per pruning step, and after torch._dynamo.config.recompile_limit of them the model runs eagerly"
    ),
)
def test_recompilations_do_not_grow_with_the_number_of_pruning_steps() -> None:
    limit = int(torch._dynamo.config.recompile_limit)
    steps = limit + 6
    backend, pruned = train("bool", steps, every=1, end=steps)
    assert all(pruned)
    assert backend.compiled <= 3  # the dense model, the first masked one, and at most one more
    assert backend.calls == steps  # every forward ran compiled, the last ones too


def test_in_place_masking_compiles_the_model_once_however_many_pruning_steps() -> None:
    steps = int(torch._dynamo.config.recompile_limit) + 6
    backend, pruned = train("bool", steps, every=1, end=steps, masking="in_place")
    assert all(pruned)
    assert backend.compiled == 1  # plain parameters, no hooks: the masks are applied outside the graph
    assert backend.calls == steps  # every forward ran compiled
