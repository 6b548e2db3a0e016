"""The demo's package functions: data, training, the sweep over the registry, outputs, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import Tensor

import pruneplug
from pruneplug.demo import (
    GRADUAL_PLOT_FILE,
    GRADUAL_TABLE_FILE,
    PLOT_FILE,
    RESULTS_FILE,
    DemoConfig,
    DemoError,
    DemoResult,
    Digits,
    SweepSettings,
    plan_variants,
    sweep,
    train_lenet,
    write_outputs,
)
from pruneplug.demo._output import atomic_write
from pruneplug.models import LeNet


def test_digits_are_lenet_shaped_with_a_stratified_held_out_split(digits: Digits) -> None:
    train, test = digits.sizes
    assert train + test == 1797 and 0.2 < test / (train + test) < 0.3
    assert digits.train_images.shape[1:] == (1, 28, 28) and digits.train_images.dtype == torch.float32
    assert set(digits.test_labels.tolist()) == set(range(10))
    assert abs(float(digits.train_images.mean())) < 1e-4


def test_training_gives_accuracy_far_above_chance(quick_result: DemoResult) -> None:
    assert quick_result.baseline_accuracy > 0.8  # chance is 0.1


def test_the_sweep_covers_every_registered_strategy(quick_result: DemoResult) -> None:
    swept = {curve.strategy for curve in quick_result.curves}
    skipped = {s.strategy: s.reason for s in quick_result.skipped}
    for spec in pruneplug.get_registry().specs():
        assert spec.name in swept or spec.name in skipped, spec.name
    assert "mask" in skipped["custom_from_mask"] and skipped["identity"] == "prunes nothing"
    by_label = {curve.label: curve for curve in quick_result.curves}
    assert by_label["ln_structured"].params == {"n": 2, "dim": 0}
    assert "fc3" not in by_label["ln_structured"].layers  # structured pruning leaves the classes alone
    assert {"scored_unstructured (magnitude)", "scored_unstructured (taylor)"} <= set(by_label)
    assert by_label["global l1_unstructured"].scope == "global"


def test_points_follow_the_amounts(quick_result: DemoResult) -> None:
    amounts = quick_result.config.amounts
    for curve in quick_result.curves:
        if curve.points[0].amount is None:
            assert len(curve.points) == 1 and curve.points[0].sparsity > 0
            continue
        assert [p.amount for p in curve.points] == list(amounts)
        assert curve.points[0].accuracy == quick_result.baseline_accuracy  # amount 0 prunes nothing
        if curve.kind == "unstructured":
            assert [round(p.sparsity, 2) for p in curve.points] == [round(a, 2) for a in amounts]
    global_l1 = next(c for c in quick_result.curves if c.scope == "global")
    assert global_l1.points[-1].accuracy > 0.5  # 90% sparse, still far above chance


def test_outputs_are_written_atomically(quick_result: DemoResult, tmp_path: Path) -> None:
    out = tmp_path / "nested" / "out"
    written = write_outputs(quick_result, out)
    files = [RESULTS_FILE, PLOT_FILE, GRADUAL_TABLE_FILE, GRADUAL_PLOT_FILE]
    assert sorted(p.name for p in out.iterdir()) == sorted(files)  # no temporary files left
    payload = json.loads(written["json"].read_text())
    assert payload["format"] == "pruneplug-demo/3" and payload["settings"]["mode"] == "quick"
    assert [c["label"] for c in payload["curves"]] == [c.label for c in quick_result.curves]
    assert payload["baseline"]["accuracy"] == quick_result.baseline_accuracy
    assert written["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_failed_write_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "results.json"
    target.write_text("old")

    def fail(file: object) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, fail)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_an_output_folder_that_is_a_file_is_refused(quick_result: DemoResult, tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("")
    with pytest.raises(DemoError, match="is a file, not a folder"):
        write_outputs(quick_result, tmp_path / "taken")


def _state(model: torch.nn.Module) -> list[Tensor]:
    return [t.detach().clone() for t in model.state_dict().values()]


def test_training_is_deterministic_under_a_seed(digits: Digits) -> None:
    config = DemoConfig(epochs=1)
    first, again = _state(train_lenet(digits, config)), _state(train_lenet(digits, config))
    other = _state(train_lenet(digits, DemoConfig(epochs=1, seed=1)))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


def test_the_sweep_is_deterministic_under_a_seed(digits: Digits, registry: pruneplug.Registry) -> None:
    variants, _ = plan_variants(registry)
    chosen = [v for v in variants if v.label in ("random_unstructured", "random_structured", "global l1_unstructured")]
    model = train_lenet(digits, DemoConfig(epochs=1))
    settings = SweepSettings(amounts=(0.5,), seed=3, fine_tune_epochs=1)
    first, _ = sweep(model, digits, chosen, settings)
    before = torch.get_rng_state()
    again, _ = sweep(model, digits, chosen, settings)
    assert torch.equal(before, torch.get_rng_state())  # the global RNG is left alone
    assert first == again and len(first) == 3
    assert not pruneplug.is_pruned(model)  # the trained network itself is never pruned


class EveryThird(pruneplug.BasePruningMethod):
    """Prune every third entry (a plugin strategy without an amount)."""

    PRUNING_TYPE = "unstructured"
    name = "every_third"

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        mask = default_mask.clone()
        mask.view(-1)[::3] = 0
        return mask


class NeedsThreshold(pruneplug.BasePruningMethod):
    """Prune entries below a threshold the demo cannot guess."""

    PRUNING_TYPE = "unstructured"
    name = "needs_threshold"

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        return default_mask & (t.abs() >= self.threshold)


class Broken(pruneplug.BasePruningMethod):
    """Fail on every tensor."""

    PRUNING_TYPE = "unstructured"
    name = "broken"

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        raise RuntimeError("no")


def test_strategies_registered_at_run_time_take_part(digits: Digits, registry: pruneplug.Registry) -> None:
    for strategy in (EveryThird, NeedsThreshold, Broken):
        registry.register(strategy)
    variants, skipped = plan_variants(registry)
    assert "threshold" in next(s.reason for s in skipped if s.strategy == "needs_threshold")
    chosen = [v for v in variants if v.spec.name in ("every_third", "broken")]
    assert [v.takes_amount for v in chosen] == [False, False]
    curves, not_applicable = sweep(LeNet(), digits, chosen, SweepSettings(amounts=(0.5,), fine_tune_epochs=0))
    assert [c.label for c in curves] == ["every_third"] and len(curves[0].points) == 1
    assert round(curves[0].points[0].sparsity, 2) == 0.33
    assert [s.strategy for s in not_applicable] == ["broken"] and "RuntimeError" in not_applicable[0].reason


def test_the_demo_runs_torch_on_one_thread_and_restores_the_count(
    digits: Digits, monkeypatch: pytest.MonkeyPatch
) -> None:
    # LeNet's batches are too small to share out: two threads waiting on each other cost more
    # than the work (3 epochs: 87 s against 5 s on a busy two-core machine).
    from pruneplug.demo import _run

    seen: list[int] = []

    def stop(*args: object, **kwargs: object) -> None:
        seen.append(torch.get_num_threads())
        raise KeyboardInterrupt

    threads = torch.get_num_threads()
    monkeypatch.setattr(_run, "load_digits_data", lambda: digits)
    monkeypatch.setattr(_run, "train_lenet", stop)
    torch.set_num_threads(2)
    try:
        with pytest.raises(KeyboardInterrupt):
            _run.run_demo(DemoConfig.quick())
        assert seen == [1] and torch.get_num_threads() == 2  # restored, even on the way out of an error
    finally:
        torch.set_num_threads(threads)
