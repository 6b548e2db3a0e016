"""The gradual against one-shot comparison: exact sparsities, equal budgets, branching, the summary."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

import pytest
import torch

import pruneplug
from pruneplug.demo import (
    DemoConfig,
    Digits,
    GradualComparison,
    GradualSettings,
    _gradual,
    compare_gradual,
    gradual_settings,
)
from pruneplug.models import LeNet
from pruneplug.selection.threads import intra_op_threads

AMOUNTS = (0.9, 0.95)


def _settings(digits: Digits, seeds: tuple[int, ...] = (0, 1)) -> GradualSettings:
    return gradual_settings(
        AMOUNTS, seeds, epochs=1, train_size=digits.sizes[0], learning_rate=2e-3, batch_size=64, evaluations=4
    )


@pytest.fixture(scope="module")
def comparison(digits: Digits) -> GradualComparison:
    return compare_gradual(digits, _settings(digits))


@dataclass(frozen=True)
class SeedOne:
    """The comparison for seed 1 alone, each run's Adam step counts, and whether the global RNG was left alone."""

    alone: GradualComparison
    adam_steps: list[tuple[str, set[int]]]  # (method, the step counts of its parameters)
    rng_untouched: bool


@pytest.fixture(scope="module")
def seed_one(digits: Digits) -> SeedOne:
    adam_steps: list[tuple[str, set[int]]] = []
    finish = _gradual._finish

    def counting(state: Any, method: Any, *args: Any) -> Any:
        adam_steps.append((method, {int(s["step"]) for s in state.optimizer.state.values()}))
        return finish(state, method, *args)

    before = torch.get_rng_state()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_gradual, "_finish", counting)
        alone = compare_gradual(digits, _settings(digits, seeds=(1,)))
    return SeedOne(alone, adam_steps, torch.equal(before, torch.get_rng_state()))


def _weights() -> int:
    model = LeNet(num_classes=10)
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)))


def test_one_epoch_gives_a_warm_up_a_ramp_and_a_fine_tune(digits: Digits) -> None:
    settings = _settings(digits)
    assert settings.total_steps == 22  # 1,347 training digits, 64 a step
    assert 0 < settings.warmup < settings.ramp_end < settings.total_steps - 1 and settings.fine_tune_steps > 0
    assert settings.schedule("one-shot") == {"name": "one_shot", "start": settings.ramp_end}
    assert settings.schedule("gradual")["name"] == "cubic"


def test_both_methods_reach_exactly_the_target_sparsity(comparison: GradualComparison) -> None:
    weights = _weights()
    for amount in AMOUNTS:
        for method in ("one-shot", "gradual"):
            runs = comparison.runs_of(method, amount)
            assert len(runs) == 2
            assert {run.final_sparsity for run in runs} == {round(amount * weights) / weights}, method
    assert {run.final_sparsity for run in comparison.runs_of("dense", 0.0)} == {0.0}


def test_one_shot_prunes_at_ramp_end_and_gradual_ramps_up_to_it(comparison: GradualComparison) -> None:
    settings = comparison.settings
    for amount in AMOUNTS:
        (one_shot, gradual) = (comparison.runs_of(m, amount)[0] for m in ("one-shot", "gradual"))
        assert one_shot.steps == gradual.steps
        for step, shot, ramp in zip(one_shot.steps, one_shot.sparsity, gradual.sparsity):
            assert (shot > 0) == (step > settings.ramp_end), step  # steps done: step ramp_end is the (ramp_end+1)th
            assert (ramp > 0) == (step > settings.warmup + settings.every), step  # nothing at warmup itself
        assert list(gradual.sparsity) == sorted(gradual.sparsity)
        ramp = [share for step, share in zip(gradual.steps, gradual.sparsity) if step <= settings.ramp_end]
        assert 0 < ramp[-1] < amount  # still below the target before the last pruning step
        # the one-shot run's accuracy at ramp end is the pruned network's, before any fine-tune step
        assert one_shot.accuracy_at_ramp_end == one_shot.accuracy[one_shot.steps.index(settings.ramp_end + 1)]


def test_every_run_takes_the_same_number_of_optimizer_steps(seed_one: SeedOne) -> None:
    settings, adam_steps = seed_one.alone.settings, seed_one.adam_steps
    assert [method for method, _ in adam_steps] == ["dense", "one-shot", "gradual", "one-shot", "gradual"]
    assert all(steps == {settings.total_steps} for _, steps in adam_steps), adam_steps


def test_a_branched_run_is_the_run_trained_from_the_start(digits: Digits, comparison: GradualComparison) -> None:
    settings = comparison.settings
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = LeNet(num_classes=10)
    state = _gradual._State(model, torch.optim.Adam(model.parameters(), lr=settings.learning_rate), [], [], [])
    rule: dict[str, Any] = {
        "types": ["Conv2d", "Linear"],
        "strategy": "l1_unstructured",
        "scope": "global",
        "params": {"amount": 0.9},
    }
    pruner = pruneplug.Pruner(model, [rule], schedule=settings.schedule("gradual"), optimizer=state.optimizer)
    batches = _gradual._batches(settings, digits.sizes[0], seed=1)
    with intra_op_threads(1):  # as the comparison trains (and fast: LeNet's batches are too small to share)
        _gradual._train_steps(
            state, digits, batches, range(settings.total_steps), settings, lambda step: pruner.step(step=step)
        )
    from_start = _gradual._finish(state, "gradual", 0.9, 1, settings)
    (branched,) = [run for run in comparison.runs_of("gradual", 0.9) if run.seed == 1]
    assert from_start == branched


def test_rows_summarise_the_seeds(comparison: GradualComparison) -> None:
    keys = [(row.method, row.target) for row in comparison.rows]
    assert keys == [("dense", 0.0), ("one-shot", 0.9), ("gradual", 0.9), ("one-shot", 0.95), ("gradual", 0.95)]
    for row in comparison.rows:
        finals = [run.final_accuracy for run in comparison.runs_of(row.method, row.target)]
        assert row.seeds == 2 and row.accuracy == statistics.median(finals)
        assert (row.accuracy_min, row.accuracy_max) == (min(finals), max(finals))


def test_a_seed_gives_the_same_runs_alone_or_among_others_and_leaves_the_global_rng_alone(
    comparison: GradualComparison, seed_one: SeedOne
) -> None:
    assert seed_one.rng_untouched
    assert seed_one.alone.runs == tuple(run for run in comparison.runs if run.seed == 1)


def test_too_short_a_budget_and_bad_fields_are_refused(digits: Digits) -> None:
    with pytest.raises(ValueError, match="gradual_epochs=1 gives 2 steps"):
        gradual_settings(AMOUNTS, (0,), epochs=1, train_size=digits.sizes[0], learning_rate=1e-3, batch_size=1000)
    with pytest.raises(ValueError, match="needs amounts and seeds"):
        gradual_settings((), (0,), epochs=1, train_size=100, learning_rate=1e-3, batch_size=10)
    with pytest.raises(ValueError, match="gradual_amounts"):
        DemoConfig(gradual_amounts=(1.0,))
    with pytest.raises(ValueError, match="gradual_seeds"):
        DemoConfig(gradual_seeds=0)


def test_the_demo_refuses_too_short_a_comparison_before_training(
    digits: Digits, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pruneplug.demo import _run

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("trained before checking the comparison's budget")

    monkeypatch.setattr(_run, "load_digits_data", lambda: digits)
    monkeypatch.setattr(_run, "train_lenet", no_training)
    with pytest.raises(ValueError, match="too few for a warm-up"):
        _run.run_demo(DemoConfig(gradual_epochs=1, batch_size=1000))
