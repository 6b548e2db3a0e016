"""Channel pruning and compaction: what pruning buys in parameters, MACs and measured latency.

The sweep's strategies zero weights inside tensors that keep their shapes,
so the pruned networks are exactly as big and as slow as the dense one. This
part removes channels for real. For each amount, a deep copy of the trained
network gets :func:`pruneplug.prune_channels` with ``ln_structured`` (the L2
norm): whole coupled channel groups -- a convolution's filters with the next
layer's input channels, ``conv2``'s filters with the 4x4 blocks of ``fc1``'s
columns they flatten into -- are masked, the amount of each group's channels.
The masked copy is scored, fine-tuned like the sweep's networks (the masks
stay on: pruned channels get no gradient), scored again, and then
:func:`pruneplug.compact` slices the masked channels out, which it checks
changes no output. The compacted network is scored a third time (the same
accuracy as the fine-tuned masked one, as compaction promises), and its CPU
latency is measured against the dense network's.

Latency: the median of ``repeats`` forwards of one fixed batch (the first
``batch_size`` training images, also the example inputs of the trace) under
:func:`torch.inference_mode`, on :data:`LATENCY_THREADS` intra-op thread,
after a few warm-up forwards. The dense and the compacted network take turns,
forward by forward, so that a neighbour's load on a shared machine slows both
alike and their ratio (the speed-up) holds better than either time. Latencies
are the only numbers besides the timings that differ between two runs with
the same seed.

An amount that would empty a group (95% of ``conv1``'s 6 filters rounds to
all 6) is left out, with the reason: :func:`pruneplug.prune_channels` never
removes a whole layer.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from ..compaction import compact, count_macs, count_params, prune_channels
from ..errors import PruneplugError
from ..selection.threads import intra_op_threads
from ._data import Digits
from ._progress import Phases, silent
from ._sweep import SweepSettings, prunable_layers, scored_before_and_after_fine_tuning, weight_sparsity
from ._training import evaluate

__all__ = [
    "CHANNEL_STRATEGY",
    "CHANNEL_PARAMS",
    "LATENCY_THREADS",
    "WARMUP_FORWARDS",
    "ChannelPoint",
    "ChannelSweep",
    "LeftOut",
    "median_latencies",
    "channel_sweep",
    "prune_and_compact",
]

CHANNEL_STRATEGY = "ln_structured"
CHANNEL_PARAMS: dict[str, Any] = {"n": 2}
"""The strategy ranking each group's channels and its parameters (no ``dim``: the channel graph decides)."""
LATENCY_THREADS = 1
"""Intra-op threads during the latency measurements (the demo's own count: LeNet's batches are too small to share)."""
WARMUP_FORWARDS = 3
"""Untimed forwards of each network before its latency is measured."""


@dataclass(frozen=True)
class ChannelPoint:
    """One amount of channel pruning: the masked network, then the compacted one.

    Attributes:
        amount: the share of each channel group's channels pruned.
        sparsity: the share of zeros over every conv/linear weight of the
            masked network (a channel's filter and the next layer's columns
            for it are both zero, so this grows faster than ``amount``).
        accuracy: test accuracy of the masked network right after pruning.
        accuracy_fine_tuned: the same after the fine-tune (masks on).
        accuracy_compacted: test accuracy of the compacted network (made
            from the fine-tuned one): equal to ``accuracy_fine_tuned``.
        widths: output channels (features) of each conv/linear layer after compaction.
        params: parameters of the compacted network.
        macs_per_image: its multiply-accumulates per image (the compaction
            report's count for the batch, divided by the batch size).
        latency_ms: the median time of one forward of the compacted network on the batch.
        dense_latency_ms: the dense network's, measured in turns with it.
        speedup: ``dense_latency_ms / latency_ms``.
    """

    amount: float
    sparsity: float
    accuracy: float
    accuracy_fine_tuned: float
    accuracy_compacted: float
    widths: dict[str, int]
    params: int
    macs_per_image: int
    latency_ms: float
    dense_latency_ms: float
    speedup: float


@dataclass(frozen=True)
class LeftOut:
    """An amount the channel sweep could not run, and why."""

    amount: float
    reason: str


@dataclass
class ChannelSweep:
    """Channel pruning then compaction at each amount, and how the latencies were measured.

    Attributes:
        strategy: the strategy ranking the channels (:data:`CHANNEL_STRATEGY`).
        params: its parameters.
        threads: intra-op threads during the latency measurements.
        batch_size: images in the timed batch (and in the trace's example inputs).
        repeats: timed forwards of each network per point (after :data:`WARMUP_FORWARDS`).
        dense_params: parameters of the dense network.
        dense_macs_per_image: its multiply-accumulates per image.
        dense_widths: output channels (features) of each of its conv/linear layers.
        points: one per amount run, in the order of the amounts.
        left_out: the amounts that could not run.
    """

    strategy: str
    params: dict[str, Any]
    threads: int
    batch_size: int
    repeats: int
    dense_params: int
    dense_macs_per_image: int
    dense_widths: dict[str, int]
    points: list[ChannelPoint] = field(default_factory=list)
    left_out: list[LeftOut] = field(default_factory=list)


def _widths(model: nn.Module) -> dict[str, int]:
    widths = {}
    for name, module in prunable_layers(model):
        width = getattr(module, "out_channels", None) or getattr(module, "out_features", None)
        if isinstance(width, int):
            widths[name] = width
    return widths


def median_latencies(models: Sequence[nn.Module], batch: Tensor, *, repeats: int) -> list[float]:
    """The median seconds of one forward of each of ``models`` on ``batch``, the models taking turns.

    Each model is put in eval mode and run :data:`WARMUP_FORWARDS` times
    untimed; then ``repeats`` rounds time one forward of each, the order
    reversed every other round. Runs under :func:`torch.inference_mode` on
    the caller's thread count.

    Raises:
        ValueError: ``repeats`` is below 1.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for model in models:
        model.eval()
    times: list[list[float]] = [[] for _ in models]
    order = list(range(len(models)))
    with torch.inference_mode():
        for _ in range(WARMUP_FORWARDS):
            for model in models:
                model(batch)
        for round_ in range(repeats):
            for index in order if round_ % 2 == 0 else order[::-1]:
                started = time.perf_counter()
                models[index](batch)
                times[index].append(time.perf_counter() - started)
    return [statistics.median(series) for series in times]


def prune_and_compact(
    trained: nn.Module, data: Digits, amount: float, settings: SweepSettings, batch: Tensor
) -> tuple[nn.Module, nn.Module, ChannelPoint]:
    """Prune channels of a copy of ``trained``, fine-tune, compact; the masked copy, the compacted one, the point.

    The masked copy is a deep copy of the fine-tuned masked network taken
    before compaction (for tests that compare the two); the point's
    latencies are left at zero (:func:`channel_sweep` measures them).

    Raises:
        PruneplugError: ``amount`` would empty a channel group (or another
            reason :func:`pruneplug.prune_channels` refuses).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = copy.deepcopy(trained)
        prune_channels(model, CHANNEL_STRATEGY, amount=amount, example_inputs=(batch,), **CHANNEL_PARAMS)
        sparsity = weight_sparsity(model)
        accuracy, fine_tuned = scored_before_and_after_fine_tuning(model, data, settings)
        masked = copy.deepcopy(model)
        report = compact(model)
        compacted = evaluate(model, data.test_images, data.test_labels)
    point = ChannelPoint(
        amount=amount,
        sparsity=sparsity,
        accuracy=accuracy,
        accuracy_fine_tuned=fine_tuned,
        accuracy_compacted=compacted,
        widths=_widths(model),
        params=report.params_after,
        macs_per_image=report.macs_after // len(batch),
        latency_ms=0.0,
        dense_latency_ms=0.0,
        speedup=0.0,
    )
    return masked, model, point


def channel_sweep(
    trained: nn.Module,
    data: Digits,
    settings: SweepSettings,
    *,
    batch_size: int,
    repeats: int,
    phases: Phases = silent,
) -> ChannelSweep:
    """Channel-prune, fine-tune and compact copies of ``trained`` at each amount; time them against it.

    ``trained`` is never modified. Amounts of 1 (or any that would empty a
    channel group) are left out, with the reason.

    Raises:
        ValueError: ``batch_size`` or ``repeats`` is below 1.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batch = data.train_images[:batch_size]
    dense = copy.deepcopy(trained).eval()
    with intra_op_threads(LATENCY_THREADS):
        result = ChannelSweep(
            strategy=CHANNEL_STRATEGY,
            params=dict(CHANNEL_PARAMS),
            threads=torch.get_num_threads(),
            batch_size=len(batch),
            repeats=repeats,
            dense_params=count_params(dense),
            # A real forward of LeNet costs milliseconds; fake tensors' first use costs a third of a second.
            dense_macs_per_image=count_macs(dense, (batch,), fake=False) // len(batch),
            dense_widths=_widths(dense),
        )
        with phases(len(settings.amounts)) as step:
            for amount in settings.amounts:
                step.start(f"{CHANNEL_STRATEGY} channels at {amount:.0%}, compacted")
                try:
                    _, compacted, point = prune_and_compact(trained, data, amount, settings, batch)
                except PruneplugError as error:
                    result.left_out.append(LeftOut(amount, error.reason))
                else:
                    dense_s, compacted_s = median_latencies([dense, compacted], batch, repeats=repeats)
                    result.points.append(
                        _with_latency(point, dense_ms=1000.0 * dense_s, compacted_ms=1000.0 * compacted_s)
                    )
                step.advance()
    return result


def _with_latency(point: ChannelPoint, *, dense_ms: float, compacted_ms: float) -> ChannelPoint:
    return replace(
        point,
        latency_ms=round(compacted_ms, 4),
        dense_latency_ms=round(dense_ms, 4),
        speedup=round(dense_ms / compacted_ms, 3),
    )
