"""The whole demo: train LeNet, sweep every strategy, prune channels and compact, compare gradual pruning; return all.

:func:`run_demo` is what ``pruneplug demo`` runs; it writes nothing (see
:func:`~pruneplug.demo.write_outputs`) and prints nothing (see
:func:`~pruneplug.demo.accuracy_tables`), so it can be called from code and
tests as it is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from ..models import LeNet
from ..registry import get_registry
from ..selection.threads import intra_op_threads
from ._channels import ChannelSweep, channel_sweep
from ._data import NUM_CLASSES, Digits, load_digits_data
from ._extra import require_extra
from ._gradual import GradualComparison, compare_gradual, gradual_settings
from ._progress import Phases, silent
from ._sweep import Curve, SweepSettings, sweep
from ._training import accumulate_gradients, evaluate, train
from ._variants import Skipped, plan_variants

__all__ = [
    "DemoConfig",
    "DemoResult",
    "run_demo",
    "train_lenet",
    "fine_tune_text",
    "FULL_AMOUNTS",
    "QUICK_AMOUNTS",
    "GRADUAL_AMOUNTS",
    "MEASURED_SECONDS",
]

FULL_AMOUNTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
QUICK_AMOUNTS = (0.0, 0.5, 0.9)
GRADUAL_AMOUNTS = (0.9, 0.95)
MEASURED_SECONDS = {"full": 95, "quick": 26}
"""How long ``pruneplug demo`` and ``pruneplug demo --quick`` take on two CPU cores, in seconds.

Medians measured by ``benchmarks/demo.py`` (the table in docs/benchmarks.md); the CLI's
help quotes them. Rerun the benchmark and update these with the docs that quote them.
"""


@dataclass(frozen=True)
class DemoConfig:
    """How long the demo trains, which sparsities it sweeps, how often it times a forward.

    ``latency_repeats`` is the number of timed forwards of each network per
    amount of the channel pruning run (their median is the latency).

    ``gradual_epochs`` is the training budget of each run of the gradual
    against one-shot comparison (:func:`~pruneplug.demo.compare_gradual`), in
    passes over the training images; ``0`` leaves the comparison out.
    ``gradual_seeds`` runs each method that many times (seeds ``seed``,
    ``seed + 1``, ...), and ``gradual_amounts`` are its target sparsities.

    Use :meth:`full` (the default run) or :meth:`quick` (fewer epochs and
    sparsities, for tests and a first look); :data:`MEASURED_SECONDS` says
    how long each takes.
    """

    seed: int = 0
    mode: Literal["full", "quick", "custom"] = "custom"
    epochs: int = 20
    learning_rate: float = 2e-3
    batch_size: int = 64
    amounts: tuple[float, ...] = FULL_AMOUNTS
    fine_tune_epochs: int = 2
    fine_tune_learning_rate: float = 5e-4
    latency_repeats: int = 25
    gradual_epochs: int = 8
    gradual_seeds: int = 3
    gradual_amounts: tuple[float, ...] = GRADUAL_AMOUNTS

    @classmethod
    def full(cls, seed: int = 0) -> DemoConfig:
        """The demo as ``pruneplug demo`` runs it."""
        return cls(seed=seed, mode="full")

    @classmethod
    def quick(cls, seed: int = 0) -> DemoConfig:
        """A much shorter run (``pruneplug demo --quick``): fewer epochs, three sparsities."""
        return cls(
            seed=seed,
            mode="quick",
            epochs=4,
            amounts=QUICK_AMOUNTS,
            fine_tune_epochs=1,
            latency_repeats=15,
            gradual_epochs=4,
            gradual_seeds=1,
        )

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.fine_tune_epochs < 0 or self.latency_repeats < 1:
            raise ValueError(
                "epochs and latency_repeats must be >= 1 and fine_tune_epochs >= 0, got "
                f"{self.epochs}, {self.latency_repeats} and {self.fine_tune_epochs}"
            )
        bad = [a for a in self.amounts if not 0.0 <= a <= 1.0]
        if not self.amounts or bad:
            raise ValueError(f"amounts must be fractions in [0, 1], got {list(self.amounts)}")
        if self.gradual_epochs < 0 or self.gradual_seeds < 1:
            raise ValueError(
                "gradual_epochs must be >= 0 and gradual_seeds >= 1, got "
                f"{self.gradual_epochs} and {self.gradual_seeds}"
            )
        if not self.gradual_amounts or not all(0.0 < a < 1.0 for a in self.gradual_amounts):
            raise ValueError(f"gradual_amounts must be fractions in (0, 1), got {list(self.gradual_amounts)}")


@dataclass
class DemoResult:
    """What the demo measured: the trained baseline, one curve per variant, what was skipped, channel pruning.

    ``channels`` is the channel pruning and compaction run
    (:class:`~pruneplug.demo.ChannelSweep`); ``None`` only in results
    built without it. ``gradual`` is the gradual against one-shot comparison
    (:class:`~pruneplug.demo.GradualComparison`); ``None`` when
    ``config.gradual_epochs`` is 0. ``seconds`` holds wall-clock timings
    (``train``, ``sweep``, ``channels``, ``gradual``, ``total``); they and the
    latencies in ``channels`` are the only numbers that differ between two
    runs with the same seed.
    """

    config: DemoConfig
    data_sizes: tuple[int, int]
    baseline_accuracy: float
    curves: list[Curve]
    skipped: list[Skipped]
    seconds: dict[str, float] = field(default_factory=dict)
    channels: ChannelSweep | None = None
    gradual: GradualComparison | None = None


def fine_tune_text(result: DemoResult) -> str:
    """``"fine-tuning for 2 epochs"``: how the second set of numbers was obtained, for titles."""
    epochs = result.config.fine_tune_epochs
    return f"fine-tuning for {epochs} epoch{'' if epochs == 1 else 's'}"


def train_lenet(data: Digits, config: DemoConfig, *, phases: Phases = silent) -> nn.Module:
    """A LeNet initialised from ``config.seed`` and trained on ``data`` (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = LeNet(num_classes=NUM_CLASSES)
    with phases(config.epochs) as step:
        step.start("training LeNet on the digits")
        train(
            model,
            data.train_images,
            data.train_labels,
            epochs=config.epochs,
            seed=config.seed,
            learning_rate=config.learning_rate,
            batch_size=config.batch_size,
            on_epoch=lambda _: step.advance(),
        )
    return model


def run_demo(config: DemoConfig, *, phases: Phases = silent) -> DemoResult:
    """Train LeNet on the digits, sweep every applicable registered strategy, prune channels, compare gradual pruning.

    The strategies come from the current registry (built-ins and installed
    plugins; swap it with :func:`pruneplug.use_registry`).

    Raises:
        MissingExtraError: scikit-learn or matplotlib is not installed.
        ValueError: ``gradual_epochs`` gives too few steps for the gradual
            comparison (raised before any training).
    """
    require_extra()
    # LeNet's mini-batches are too small to split: with two threads every operator waits for the
    # other, and on a machine whose cores are busy that wait costs more than the work
    # (measured: 3 training epochs took 87 s with two threads, 5 s with one).
    with intra_op_threads(1):
        return _run_demo(config, phases)


def _run_demo(config: DemoConfig, phases: Phases) -> DemoResult:
    started = time.perf_counter()
    data = load_digits_data()
    settings_gradual = None  # made first: a budget too short for the comparison fails before any training
    if config.gradual_epochs:
        settings_gradual = gradual_settings(
            config.gradual_amounts,
            [config.seed + index for index in range(config.gradual_seeds)],
            epochs=config.gradual_epochs,
            train_size=len(data.train_labels),
            learning_rate=config.learning_rate,
            batch_size=config.batch_size,
        )
    model = train_lenet(data, config, phases=phases)
    trained_at = time.perf_counter()
    baseline = evaluate(model, data.test_images, data.test_labels)
    accumulate_gradients(model, data.train_images, data.train_labels)  # for gradient-based scores (taylor)
    variants, skipped = plan_variants(get_registry())
    settings = SweepSettings(config.amounts, config.seed, config.fine_tune_epochs, config.fine_tune_learning_rate)
    curves, not_applicable = sweep(model, data, variants, settings, phases=phases)
    swept_at = time.perf_counter()
    channels = channel_sweep(
        model, data, settings, batch_size=config.batch_size, repeats=config.latency_repeats, phases=phases
    )
    channelled_at = time.perf_counter()
    gradual = None if settings_gradual is None else compare_gradual(data, settings_gradual, phases=phases)
    finished = time.perf_counter()
    return DemoResult(
        config=config,
        data_sizes=data.sizes,
        baseline_accuracy=baseline,
        curves=curves,
        skipped=skipped + not_applicable,
        seconds={
            "train": round(trained_at - started, 3),
            "sweep": round(swept_at - trained_at, 3),
            "channels": round(channelled_at - swept_at, 3),
            "gradual": round(finished - channelled_at, 3),
            "total": round(finished - started, 3),
        },
        channels=channels,
        gradual=gradual,
    )
