"""The demo's channel pruning run: compacted networks are smaller, compute what the masked ones did, timed fairly."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import pytest
import torch
from rich.console import Console
from torch import Tensor, nn

import pruneplug
from pruneplug.demo import (
    ChannelSweep,
    DemoConfig,
    DemoResult,
    Digits,
    LeftOut,
    SweepSettings,
    channel_sweep,
    evaluate,
    median_latencies,
    prune_and_compact,
    train_lenet,
    write_outputs,
)
from pruneplug.demo._channels import WARMUP_FORWARDS
from pruneplug.demo._table import channel_tables
from pruneplug.selection.threads import openmp_backend


@pytest.fixture(scope="module")
def trained(digits: Digits) -> nn.Module:
    return train_lenet(digits, DemoConfig(epochs=1))


def _channels(result: DemoResult) -> ChannelSweep:
    assert result.channels is not None
    return result.channels


def test_the_quick_demo_compacts_at_every_amount_and_compaction_changes_no_accuracy(quick_result: DemoResult) -> None:
    channels = _channels(quick_result)
    assert [p.amount for p in channels.points] == list(quick_result.config.amounts) and channels.left_out == []
    assert channels.strategy == "ln_structured" and channels.params == {"n": 2}
    assert channels.threads == 1 and channels.batch_size == quick_result.config.batch_size
    assert channels.repeats == quick_result.config.latency_repeats
    assert channels.dense_params == pruneplug.count_params(pruneplug.models.LeNet())
    assert channels.dense_widths == {"conv1": 6, "conv2": 16, "fc1": 120, "fc2": 84, "fc3": 10}
    unpruned, *pruned = channels.points
    assert unpruned.sparsity == 0.0 and unpruned.widths == channels.dense_widths
    assert unpruned.params == channels.dense_params and unpruned.macs_per_image == channels.dense_macs_per_image
    assert unpruned.accuracy == quick_result.baseline_accuracy
    for point in channels.points:
        assert point.accuracy_compacted == point.accuracy_fine_tuned, point.amount
        assert point.latency_ms > 0 and point.dense_latency_ms > 0
        assert point.speedup == pytest.approx(point.dense_latency_ms / point.latency_ms, rel=1e-3)
    previous = unpruned
    for point in pruned:  # each amount removes more: narrower layers, fewer parameters and MACs, more zeros
        assert point.params < previous.params and point.macs_per_image < previous.macs_per_image
        assert point.sparsity > previous.sparsity
        assert all(point.widths[n] < previous.widths[n] for n in ("conv1", "conv2", "fc1", "fc2")), point.widths
        assert point.widths["fc3"] == 10  # the classes are never pruned
        previous = point
    assert pruned[0].widths == {"conv1": 3, "conv2": 8, "fc1": 60, "fc2": 42, "fc3": 10}  # 50% of each group


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(tensor.shape) for name, tensor in model.named_parameters()}


def test_the_compacted_network_is_smaller_and_computes_what_the_masked_one_did(
    trained: nn.Module, digits: Digits
) -> None:
    before = {name: tensor.detach().clone() for name, tensor in trained.state_dict().items()}
    batch = digits.train_images[:64]
    settings = SweepSettings(amounts=(0.5,), seed=0, fine_tune_epochs=1)
    masked, compacted, point = prune_and_compact(trained, digits, 0.5, settings, batch)
    assert pruneplug.is_pruned(masked) and not pruneplug.is_pruned(compacted)
    assert _shapes(compacted) == {
        "conv1.weight": (3, 1, 5, 5),
        "conv1.bias": (3,),
        "conv2.weight": (8, 3, 5, 5),
        "conv2.bias": (8,),
        "fc1.weight": (60, 8 * 4 * 4),
        "fc1.bias": (60,),
        "fc2.weight": (42, 60),
        "fc2.bias": (42,),
        "fc3.weight": (10, 42),
        "fc3.bias": (10,),
    }
    assert point.params == pruneplug.count_params(compacted) < pruneplug.count_params(trained)
    assert point.macs_per_image == pruneplug.count_macs(compacted, (batch[:1],))
    masked.eval(), compacted.eval()
    with torch.no_grad():
        torch.testing.assert_close(compacted(digits.test_images), masked(digits.test_images), rtol=1e-4, atol=1e-5)
    accuracy = evaluate(masked, digits.test_images, digits.test_labels)
    assert point.accuracy_fine_tuned == accuracy == point.accuracy_compacted
    assert point.accuracy_fine_tuned != point.accuracy  # the fine-tune did train the masked network
    after = trained.state_dict()
    assert not pruneplug.is_pruned(trained) and all(torch.equal(after[k], v) for k, v in before.items())


def test_the_channel_run_is_deterministic_under_a_seed(trained: nn.Module, digits: Digits) -> None:
    settings = SweepSettings(amounts=(0.3,), seed=2, fine_tune_epochs=1)
    batch = digits.train_images[:64]
    _, first_model, first = prune_and_compact(trained, digits, 0.3, settings, batch)
    state = torch.get_rng_state()
    _, again_model, again = prune_and_compact(trained, digits, 0.3, settings, batch)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is left alone
    assert first == again
    assert all(torch.equal(a, b) for a, b in zip(first_model.state_dict().values(), again_model.state_dict().values()))


def test_an_amount_that_would_empty_a_group_is_left_out_with_the_reason(trained: nn.Module, digits: Digits) -> None:
    settings = SweepSettings(amounts=(0.95, 1.0), fine_tune_epochs=0)
    result = channel_sweep(trained, digits, settings, batch_size=16, repeats=1)
    assert result.points == [] and [left.amount for left in result.left_out] == [0.95, 1.0]
    assert "would prune all 6 channels" in result.left_out[0].reason and "conv1" in result.left_out[0].reason
    assert result.batch_size == 16 and result.dense_macs_per_image == pruneplug.count_macs(
        trained, (torch.ones(1, 1, 28, 28),)
    )


@pytest.mark.skipif(not openmp_backend(), reason="torch's native thread pool cannot change its size")
def test_latencies_are_measured_on_one_thread_and_the_count_restored(trained: nn.Module, digits: Digits) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        result = channel_sweep(trained, digits, SweepSettings(amounts=(0.95,)), batch_size=8, repeats=1)
        assert result.threads == 1 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


class _Recorder(nn.Module):
    def __init__(self, name: str, calls: list[tuple[str, bool, bool]]) -> None:
        super().__init__()
        self.name, self.calls = name, calls

    def forward(self, x: Tensor) -> Tensor:
        self.calls.append((self.name, self.training, torch.is_inference_mode_enabled()))
        return x


def test_median_latencies_times_the_models_in_turns_in_eval_and_inference_mode() -> None:
    calls: list[tuple[str, bool, bool]] = []
    models = [_Recorder("dense", calls), _Recorder("compacted", calls)]
    medians = median_latencies(models, torch.zeros(2), repeats=3)
    assert len(medians) == 2 and all(m >= 0 for m in medians)
    assert [name for name, _, _ in calls] == ["dense", "compacted"] * WARMUP_FORWARDS + [
        "dense",
        "compacted",
        "compacted",
        "dense",
        "dense",
        "compacted",
    ]
    assert all(not training and inference for _, training, inference in calls)
    with pytest.raises(ValueError, match="repeats must be >= 1, got 0"):
        median_latencies(models, torch.zeros(2), repeats=0)


def test_results_json_holds_the_channel_run(quick_result: DemoResult, tmp_path: Path) -> None:
    payload = json.loads(write_outputs(quick_result, tmp_path)["json"].read_text())
    assert payload["format"] == "pruneplug-demo/3"
    channels = payload["channels"]
    assert channels == json.loads(json.dumps(dataclasses.asdict(_channels(quick_result))))
    assert set(channels) == {
        "strategy",
        "params",
        "threads",
        "batch_size",
        "repeats",
        "dense_params",
        "dense_macs_per_image",
        "dense_widths",
        "points",
        "left_out",
    }
    assert set(channels["points"][0]) == {
        "amount",
        "sparsity",
        "accuracy",
        "accuracy_fine_tuned",
        "accuracy_compacted",
        "widths",
        "params",
        "macs_per_image",
        "latency_ms",
        "dense_latency_ms",
        "speedup",
    }
    assert payload["settings"]["latency_repeats"] == quick_result.config.latency_repeats
    assert set(payload["seconds"]) == {"train", "sweep", "channels", "gradual", "total"}


@pytest.mark.parametrize("width", [60, 80, 200])
def test_the_channel_tables_are_never_cut(quick_result: DemoResult, width: int) -> None:
    channels = _channels(quick_result)
    slow = dataclasses.replace(channels.points[-1], latency_ms=123.4567, dense_latency_ms=987.6543, speedup=12.345)
    wide = dataclasses.replace(
        channels,
        points=[*channels.points, slow],
        left_out=[LeftOut(0.95, "amount=0.95 would prune all 6 channels of group #0 (conv1.weight)")],
    )
    out = io.StringIO()
    console = Console(width=width, file=out)
    for part in channel_tables(wide):
        console.print(part)
    text = out.getvalue()
    assert "…" not in text
    assert "6-16-120-84" in text and "3-8-60-42" in text and "44,426" in text and "281,640" in text
    assert "123" in text and "988" in text and "12.35x" in text and "left out 95%" in text


def test_the_plot_shows_the_compacted_curve_and_the_gains(
    quick_result: DemoResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.colors import to_rgb
    from matplotlib.figure import Figure

    from pruneplug.demo._output import _draw_plot

    drawn: list[Figure] = []
    monkeypatch.setattr(Figure, "savefig", lambda figure, *args, **kwargs: drawn.append(figure))
    _draw_plot(quick_result, io.BytesIO())
    (figure,) = drawn
    accuracy, fine_tuned, gains = figure.axes
    channels = _channels(quick_result)
    label = "ln_structured channels, compacted"
    for ax, key in ((accuracy, "accuracy"), (fine_tuned, "accuracy_compacted")):
        (line,) = [line for line in ax.get_lines() if line.get_label() == label]
        assert list(line.get_ydata()) == [100.0 * getattr(p, key) for p in channels.points]
        others = [line for line in ax.get_lines() if line.get_label() != label]
        for other in others:  # a colour of its own, far from every other curve and reference line
            distance = sum((a - b) ** 2 for a, b in zip(to_rgb(line.get_color()), to_rgb(other.get_color()))) ** 0.5
            assert distance >= 0.2, other.get_label()
    by_label = {line.get_label(): line for line in gains.get_lines()}
    assert list(by_label["measured speed-up"].get_ydata()) == [p.speedup for p in channels.points]
    assert list(by_label["fewer MACs"].get_ydata()) == [
        channels.dense_macs_per_image / p.macs_per_image for p in channels.points
    ]
    assert list(by_label["fewer parameters"].get_ydata()) == [channels.dense_params / p.params for p in channels.points]
    assert gains.get_yscale() == "log"


def test_the_plot_without_a_channel_run_has_the_two_accuracy_panels(
    quick_result: DemoResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.figure import Figure

    from pruneplug.demo._output import _draw_plot

    drawn: list[Figure] = []
    monkeypatch.setattr(Figure, "savefig", lambda figure, *args, **kwargs: drawn.append(figure))
    _draw_plot(dataclasses.replace(quick_result, channels=None), io.BytesIO())
    (figure,) = drawn
    assert len(figure.axes) == 2
