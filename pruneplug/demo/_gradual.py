"""Gradual against one-shot pruning with the same training budget: what pruning while training buys.

For each seed, LeNet is trained from its initialisation for ``total_steps``
optimizer steps (Adam, the demo's learning rate and batch size) three ways:

* **dense**: never pruned, the reference;
* **one-shot**: dense up to step ``ramp_end``, pruned there at once to the
  target sparsity, then fine-tuned for the steps left;
* **gradual**: dense up to step ``warmup``, then pruned every ``every`` steps
  along a ``cubic`` schedule (Zhu & Gupta's AGP) that reaches the target at
  ``ramp_end``, then fine-tuned for the steps left.

Both pruned runs are driven by a :class:`pruneplug.Pruner` with the same rule
(``l1_unstructured``, global over every conv and linear weight) and differ
only in the schedule (``one_shot`` at ``ramp_end`` or ``cubic``): the same
exact count of weights pruned at the same step, the same Adam state zeroed at
the pruned entries, the same batches and the same number of fine-tune steps.

The three runs of a seed agree up to ``warmup``, and dense and one-shot up
to ``ramp_end``: the pruned runs start from the dense run's model and Adam
state at that step, with the batches drawn up front for every step, instead
of training the shared steps again. That gives what training each run from
the start would (a test checks it) at about half the cost.

Test accuracy is measured every ``eval_every`` steps, at ``warmup``, at
``ramp_end`` (right after the last pruning step: for one-shot, right after
pruning, before any fine-tune) and at the end.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models import LeNet
from ..selection.threads import intra_op_threads
from ..training import Pruner
from ._data import NUM_CLASSES, Digits
from ._progress import Phases, silent
from ._sweep import prunable_layers
from ._training import evaluate

__all__ = [
    "GRADUAL_STRATEGY",
    "WARMUP_SHARE",
    "RAMP_END_SHARE",
    "PRUNING_STEPS",
    "EVALUATIONS",
    "Method",
    "GradualSettings",
    "TrainingRun",
    "GradualRow",
    "GradualComparison",
    "gradual_settings",
    "compare_gradual",
]

GRADUAL_STRATEGY = "l1_unstructured"
"""The strategy of both pruned runs, global over every conv and linear weight (the sweep's global run's)."""
WARMUP_SHARE = 0.125
"""The share of the steps trained dense before the gradual run starts pruning."""
RAMP_END_SHARE = 0.75
"""The share of the steps after which both pruned runs are at the target (the rest fine-tunes)."""
PRUNING_STEPS = 10
"""About how many pruning steps the cubic ramp takes (``every`` is the ramp's length divided by it)."""
EVALUATIONS = 16
"""About how many times each run is scored on the test set besides warm-up, ramp end and the end."""

Method = Literal["dense", "one-shot", "gradual"]


@dataclass(frozen=True)
class GradualSettings:
    """The comparison's budget, schedule and seeds (all steps count optimizer steps, from 0).

    Attributes:
        amounts: the target sparsities, over every conv and linear weight.
        seeds: one run of each method per seed (initial weights and batch order).
        total_steps: optimizer steps of every run.
        warmup: the gradual run's first pruning step (the cubic ramp's
            ``start``, where its target is still 0).
        ramp_end: the step where both pruned runs reach the target (the one-shot's only pruning step).
        every: steps between the gradual run's pruning steps.
        eval_every: steps between test-set evaluations.
        learning_rate: Adam's, for every run and phase.
        batch_size: images per step.
    """

    amounts: tuple[float, ...]
    seeds: tuple[int, ...]
    total_steps: int
    warmup: int
    ramp_end: int
    every: int
    eval_every: int
    learning_rate: float
    batch_size: int

    @property
    def fine_tune_steps(self) -> int:
        """Steps after ``ramp_end``: both pruned runs fine-tune at the target for these."""
        return self.total_steps - 1 - self.ramp_end

    def schedule(self, method: Method) -> dict[str, Any]:
        """The :class:`~pruneplug.Pruner` schedule of a pruned method (its ``final`` is the rule's amount)."""
        if method == "one-shot":
            return {"name": "one_shot", "start": self.ramp_end}
        if method == "gradual":
            return {"name": "cubic", "start": self.warmup, "end": self.ramp_end, "every": self.every}
        raise ValueError(f"the dense run has no schedule, got method {method!r}")

    def evaluated_at(self, step: int) -> bool:
        """Whether runs are scored after ``step``."""
        return (step + 1) % self.eval_every == 0 or step in (self.warmup, self.ramp_end, self.total_steps - 1)


def gradual_settings(
    amounts: Sequence[float],
    seeds: Sequence[int],
    *,
    epochs: int,
    train_size: int,
    learning_rate: float,
    batch_size: int,
    evaluations: int = EVALUATIONS,
) -> GradualSettings:
    """Settings for ``epochs`` passes over ``train_size`` images: warm-up, ramp and fine-tune as shares of the steps.

    ``evaluations``: about how many times each run is scored along the way
    (a test-set forward costs about two training steps).

    Raises:
        ValueError: the budget is too short for a warm-up, a ramp and a fine-tune
            (fewer than 8 steps), or ``amounts`` or ``seeds`` is empty.
    """
    if not amounts or not seeds:
        raise ValueError(f"the gradual comparison needs amounts and seeds, got {list(amounts)} and {list(seeds)}")
    total = epochs * -(-train_size // batch_size)
    warmup, ramp_end = round(WARMUP_SHARE * total), round(RAMP_END_SHARE * total)
    if total < 8 or not 0 < warmup < ramp_end < total - 1:
        raise ValueError(
            f"gradual_epochs={epochs} gives {total} steps of {batch_size} images: too few for a warm-up, "
            "a pruning ramp and a fine-tune (at least 8)"
        )
    return GradualSettings(
        amounts=tuple(amounts),
        seeds=tuple(seeds),
        total_steps=total,
        warmup=warmup,
        ramp_end=ramp_end,
        every=max(1, (ramp_end - warmup) // PRUNING_STEPS),
        eval_every=max(1, total // max(evaluations, 1)),
        learning_rate=learning_rate,
        batch_size=batch_size,
    )


@dataclass(frozen=True)
class TrainingRun:
    """One run of the comparison, scored along the way.

    Attributes:
        method: ``"dense"``, ``"one-shot"`` or ``"gradual"``.
        target: the target sparsity (0 for dense).
        seed: its seed.
        steps: optimizer steps done at each evaluation.
        accuracy: test accuracy at each evaluation, in [0, 1].
        sparsity: the share of the conv and linear weights pruned at each evaluation.
        accuracy_at_ramp_end: test accuracy right after step ``ramp_end``
            (for one-shot: right after pruning, before any fine-tune).
        final_accuracy: test accuracy after the last step.
        final_sparsity: the share of the conv and linear weights pruned after the last step.
    """

    method: Method
    target: float
    seed: int
    steps: tuple[int, ...]
    accuracy: tuple[float, ...]
    sparsity: tuple[float, ...]
    accuracy_at_ramp_end: float
    final_accuracy: float
    final_sparsity: float


@dataclass(frozen=True)
class GradualRow:
    """One method at one target, over the seeds: the comparison's table row.

    Attributes:
        method: ``"dense"``, ``"one-shot"`` or ``"gradual"``.
        target: the target sparsity (0 for dense).
        sparsity: the share of weights pruned at the end (the same for every seed).
        accuracy: the median final test accuracy over the seeds.
        accuracy_min: the lowest over the seeds.
        accuracy_max: the highest over the seeds.
        at_ramp_end: the median test accuracy right after step ``ramp_end``.
        seeds: how many seeds.
    """

    method: Method
    target: float
    sparsity: float
    accuracy: float
    accuracy_min: float
    accuracy_max: float
    at_ramp_end: float
    seeds: int


@dataclass(frozen=True)
class GradualComparison:
    """The settings, every run, and one summary row per method and target (dense first)."""

    settings: GradualSettings
    runs: tuple[TrainingRun, ...]
    rows: tuple[GradualRow, ...]

    def runs_of(self, method: Method, target: float) -> list[TrainingRun]:
        """The runs of ``method`` at ``target``, one per seed, in the seeds' order."""
        return [run for run in self.runs if run.method == method and run.target == target]


def _rows(runs: Sequence[TrainingRun], settings: GradualSettings) -> tuple[GradualRow, ...]:
    keys: list[tuple[Method, float]] = [("dense", 0.0)]
    keys += [(method, amount) for amount in settings.amounts for method in ("one-shot", "gradual")]
    rows = []
    for method, target in keys:
        chosen = [run for run in runs if run.method == method and run.target == target]
        finals = [run.final_accuracy for run in chosen]
        rows.append(
            GradualRow(
                method=method,
                target=target,
                sparsity=max(run.final_sparsity for run in chosen),
                accuracy=statistics.median(finals),
                accuracy_min=min(finals),
                accuracy_max=max(finals),
                at_ramp_end=statistics.median(run.accuracy_at_ramp_end for run in chosen),
                seeds=len(chosen),
            )
        )
    return tuple(rows)


@dataclass
class _State:
    """A run in progress: the model and its optimizer, and its evaluations so far."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    steps: list[int]
    accuracy: list[float]
    sparsity: list[float]


def _batches(settings: GradualSettings, train_size: int, seed: int) -> list[Tensor]:
    """Every step's mini-batch, drawn up front: a permutation per pass from a generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    batches: list[Tensor] = []
    while len(batches) < settings.total_steps:
        order = torch.randperm(train_size, generator=generator)
        batches += list(order.split(settings.batch_size))
    return batches[: settings.total_steps]


def _pruned_share(model: nn.Module) -> float:
    """The share of the conv and linear weights pruned: the zeros of their masks (exact, whatever the weights)."""
    pruned = total = 0
    for _, module in prunable_layers(model):
        mask = getattr(module, "weight_mask", None)
        if isinstance(mask, Tensor):
            total += mask.numel()
            pruned += mask.numel() - int(torch.count_nonzero(mask))
        elif isinstance(module.weight, Tensor):
            total += module.weight.numel()
    return pruned / max(total, 1)


def _record(state: _State, step: int, data: Digits) -> None:
    state.steps.append(step + 1)
    state.accuracy.append(evaluate(state.model, data.test_images, data.test_labels))
    state.sparsity.append(_pruned_share(state.model))
    state.model.train()


def _train_steps(
    state: _State,
    data: Digits,
    batches: list[Tensor],
    steps: range,
    settings: GradualSettings,
    after: Callable[[int], None],
) -> None:
    """Train ``state`` on the batches of ``steps``; ``after(step)`` runs after each optimizer step, then scoring."""
    state.model.train()
    for step in steps:
        batch = batches[step]
        state.optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(state.model(data.train_images[batch]), data.train_labels[batch]).backward()
        state.optimizer.step()
        after(step)
        if settings.evaluated_at(step):
            _record(state, step, data)


def _branch(state: _State, upto: int, learning_rate: float) -> _State:
    """A copy of the dense ``state`` after step ``upto``: model, Adam state, and the evaluations before ``upto``."""
    model = copy.deepcopy(state.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    optimizer.load_state_dict(copy.deepcopy(state.optimizer.state_dict()))
    kept = sum(1 for step in state.steps if step <= upto)  # steps are counted from 1: those before step ``upto``
    return _State(model, optimizer, state.steps[:kept], state.accuracy[:kept], state.sparsity[:kept])


def _finish(state: _State, method: Method, target: float, seed: int, settings: GradualSettings) -> TrainingRun:
    at_ramp_end = state.accuracy[state.steps.index(settings.ramp_end + 1)]
    return TrainingRun(
        method=method,
        target=target,
        seed=seed,
        steps=tuple(state.steps),
        accuracy=tuple(state.accuracy),
        sparsity=tuple(state.sparsity),
        accuracy_at_ramp_end=at_ramp_end,
        final_accuracy=state.accuracy[-1],
        final_sparsity=state.sparsity[-1],
    )


def _pruned_run(
    branch: _State,
    method: Method,
    target: float,
    seed: int,
    data: Digits,
    batches: list[Tensor],
    settings: GradualSettings,
) -> TrainingRun:
    """Prune ``branch`` (the dense run after its first step of ``method``'s schedule) by ``method`` to the end."""
    schedule = settings.schedule(method)
    pruner = Pruner(
        branch.model,
        [
            {
                "types": ["Conv2d", "Linear"],
                "strategy": GRADUAL_STRATEGY,
                "scope": "global",
                "params": {"amount": target},
            }
        ],
        schedule=schedule,
        optimizer=branch.optimizer,
    )
    first = schedule["start"]
    pruner.step(step=first)  # the branch point's optimizer step was the dense run's
    if settings.evaluated_at(first):
        _record(branch, first, data)
    rest = range(first + 1, settings.total_steps)
    _train_steps(branch, data, batches, rest, settings, lambda step: pruner.step(step=step))
    return _finish(branch, method, target, seed, settings)


def _runs_of_seed(seed: int, data: Digits, settings: GradualSettings) -> list[TrainingRun]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LeNet(num_classes=NUM_CLASSES)
    dense = _State(model, torch.optim.Adam(model.parameters(), lr=settings.learning_rate), [], [], [])
    batches = _batches(settings, len(data.train_labels), seed)
    branches: dict[int, _State] = {}

    def keep_branch_points(step: int) -> None:
        if step in (settings.warmup, settings.ramp_end):
            branches[step] = _branch(dense, step, settings.learning_rate)

    _train_steps(dense, data, batches, range(settings.total_steps), settings, keep_branch_points)
    runs = [_finish(dense, "dense", 0.0, seed, settings)]
    starts: tuple[tuple[Method, int], ...] = (("one-shot", settings.ramp_end), ("gradual", settings.warmup))
    for amount in settings.amounts:
        for method, start in starts:
            branch = _branch(branches[start], start, settings.learning_rate)  # each pruned run gets its own copy
            runs.append(_pruned_run(branch, method, amount, seed, data, batches, settings))
    return runs


def compare_gradual(data: Digits, settings: GradualSettings, *, phases: Phases = silent) -> GradualComparison:
    """Train dense, one-shot and gradual runs for every seed and target; return them with their summary.

    The global RNG is left as it was (each seed's initial weights are drawn
    in a forked RNG); two calls with the same settings return the same result.
    Torch runs on one intra-op thread, as in :func:`~pruneplug.demo.run_demo`:
    LeNet's batches are too small to share out.
    """
    runs: list[TrainingRun] = []
    with intra_op_threads(1), phases(len(settings.seeds)) as step:
        for seed in settings.seeds:
            step.start(f"gradual and one-shot pruning, seed {seed}")
            runs += _runs_of_seed(seed, data, settings)
            step.advance()
    return GradualComparison(settings, tuple(runs), _rows(runs, settings))
