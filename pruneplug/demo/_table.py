"""The demo's tables (rich): test accuracy against sparsity, one row per strategy; channel pruning.

Strategies that sweep ``amount`` get two tables with one column per amount
-- right after pruning, and after the short fine-tune; strategies without an
``amount`` (run once) get a table of their own with the sparsity they
reached. The channel pruning run gets two tables with one row per amount:
accuracy (pruned, fine-tuned, compacted), then size and latency (layer
widths, parameters, MACs per image, milliseconds, speed-up). The gradual
against one-shot comparison gets one table with a row per method and target.
"""

from __future__ import annotations

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from ._channels import ChannelSweep
from ._gradual import GradualComparison
from ._gradual_output import table_rows
from ._run import DemoResult, fine_tune_text

__all__ = ["accuracy_tables", "channel_tables", "gradual_table"]


def _percent(share: float) -> str:
    return f"{100.0 * share:.1f}"


def _ms(milliseconds: float) -> str:
    """Three significant digits (the noise is larger), five characters at most below 100 s."""
    return f"{milliseconds:.{2 if milliseconds < 10 else 1 if milliseconds < 100 else 0}f}"


def _widths(widths: dict[str, int]) -> str:
    """``"3-8-60-42"``: the hidden layers' widths (the last layer's are the classes, never pruned)."""
    return "-".join(str(width) for width in list(widths.values())[:-1])


def _compact_table(title: str) -> Table:
    """A table with a left-aligned title and no outer edge or padding, narrow enough for 60 columns."""
    return Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        pad_edge=False,
        show_edge=False,
        collapse_padding=True,
    )


def channel_tables(channels: ChannelSweep) -> list[RenderableType]:
    """The channel pruning run: an accuracy table and a size-and-latency table, one row per amount."""
    label = f"{channels.strategy} channels"
    accuracy = _compact_table(f"{label}: test accuracy (%)")
    # Two-line headers and no wrapping: both tables fit in 60 columns, and no number or width is ever cut.
    for column in ("amount\n%", "sparsity\n%", "\npruned", "fine-\ntuned", "\ncompacted"):
        accuracy.add_column(column, justify="right", no_wrap=True)
    size = _compact_table(f"{label}, compacted: size and CPU latency")
    for column in ("amount\n%", "\nwidths", "\nparams", "MACs\n/image", "latency\nms", "dense\nms", "speed-\nup"):
        size.add_column(column, justify="right", no_wrap=True)
    size.add_row(
        "dense",
        _widths(channels.dense_widths),
        f"{channels.dense_params:,}",
        f"{channels.dense_macs_per_image:,}",
        "",
        "",
        "",
    )
    for point in channels.points:
        amount = f"{100.0 * point.amount:g}"
        accuracy.add_row(
            amount,
            _percent(point.sparsity),
            _percent(point.accuracy),
            _percent(point.accuracy_fine_tuned),
            _percent(point.accuracy_compacted),
        )
        size.add_row(
            amount,
            _widths(point.widths),
            f"{point.params:,}",
            f"{point.macs_per_image:,}",
            _ms(point.latency_ms),
            _ms(point.dense_latency_ms),
            f"{point.speedup:.2f}x",
        )
    threads = f"{channels.threads} thread{'' if channels.threads == 1 else 's'}"
    notes = [
        f"{label}: whole coupled channel groups pruned ({channels.strategy}, "
        + ", ".join(f"{k}={v}" for k, v in channels.params.items())
        + "), fine-tuned with the masks on, then compacted (the channels removed for real). Widths: the output "
        f"channels of {', '.join(list(channels.dense_widths)[:-1])}. Latency: the median of {channels.repeats} "
        f"forwards of {channels.batch_size} images under torch.inference_mode on {threads}, the dense and the "
        "compacted network in turns; it varies from run to run, with the machine's load."
    ]
    notes += [f"{label}: left out {100.0 * left.amount:g}% ({left.reason})" for left in channels.left_out]
    return [Text(""), accuracy, Text(""), size, Text(""), *(Text(note, style="dim") for note in notes)]


def gradual_table(comparison: GradualComparison) -> list[RenderableType]:
    """The gradual against one-shot comparison: one row per method and target, and how it was run."""
    settings = comparison.settings
    seeds = len(settings.seeds)
    table = _compact_table(f"Gradual against one-shot pruning: test accuracy (%), {settings.total_steps} steps each")
    table.add_column("\nmethod", no_wrap=True)
    for column in ("sparsity\n%", "at ramp\nend", "final\nmedian", "\nmin", "\nmax"):
        table.add_column(column, justify="right", no_wrap=True)
    for cells in table_rows(comparison):
        table.add_row(*cells)
    note = (
        f"Each run trains LeNet from scratch for {settings.total_steps} Adam steps; pruned runs: global "
        f"l1_unstructured. One-shot: dense to step {settings.ramp_end}, pruned there at once. Gradual: a Pruner "
        f"with a cubic schedule from step {settings.warmup} to {settings.ramp_end}, every {settings.every} steps. "
        f"Both then fine-tune for {settings.fine_tune_steps} steps. At ramp end: right after step "
        f"{settings.ramp_end} (one-shot: right after pruning). Median, min and max over {seeds} "
        f"seed{'' if seeds == 1 else 's'}."
    )
    return [Text(""), table, Text(note, style="dim")]


class _SweptTables:
    """Accuracy per strategy and amount, as many tables as it takes to fit the console.

    One column per amount; when the widest strategy label and every amount
    column do not fit, the amounts are split over several tables, so that
    neither a label nor a number is ever cut.
    """

    def __init__(self, result: DemoResult, title: str, fine_tuned: bool) -> None:
        self.result, self.title, self.fine_tuned = result, title, fine_tuned

    def table(self, amounts: range) -> Table:
        # Compact (no vertical rules, one space of padding): eleven amount columns fit in about 100 characters.
        table = Table(title=self.title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
        table.add_column("strategy \\ amount %", no_wrap=True)
        for index in amounts:
            table.add_column(f"{100.0 * self.result.config.amounts[index]:g}", justify="right", no_wrap=True)
        for curve in self.result.curves:
            if curve.points and curve.points[0].amount is not None:
                points = [curve.points[index] for index in amounts]
                cells = [_percent(p.accuracy_fine_tuned if self.fine_tuned else p.accuracy) for p in points]
                table.add_row(curve.label, *cells)
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        count = len(self.result.config.amounts)
        fits, unbounded = count, options.update_width(1 << 16)  # (a measurement is clamped to the width it is given)
        while fits > 1 and Measurement.get(console, unbounded, self.table(range(fits))).maximum > options.max_width:
            fits -= 1  # (the widest label and cell are in every table, so the first range's width is everyone's)
        for start in range(0, count, fits):
            yield self.table(range(start, min(start + fits, count)))


def accuracy_tables(result: DemoResult) -> RenderableType:
    """Everything ``pruneplug demo`` prints about the results, as one rich renderable."""
    parts: list[RenderableType] = [
        Text(
            f"LeNet trained for {result.config.epochs} epochs on {result.data_sizes[0]} digits: "
            f"{_percent(result.baseline_accuracy)}% test accuracy on {result.data_sizes[1]} held-out digits "
            f"(chance: 10%)."
        ),
        _SweptTables(result, "Test accuracy (%) right after pruning", fine_tuned=False),
        _SweptTables(result, f"Test accuracy (%) after {fine_tune_text(result)}", fine_tuned=True),
    ]
    once = [c for c in result.curves if c.points and c.points[0].amount is None]
    if once:
        table = Table(title="Strategies without an amount (run once)", title_justify="left")
        for column in ("strategy", "sparsity %", "accuracy %", "fine-tuned %"):
            table.add_column(column, justify="left" if column == "strategy" else "right")
        for curve in once:
            point = curve.points[0]
            table.add_row(
                curve.label, _percent(point.sparsity), _percent(point.accuracy), _percent(point.accuracy_fine_tuned)
            )
        parts.append(table)
    notes = [
        "Amounts are per layer for local strategies and over all layers for global ones; structured "
        "strategies prune whole output channels (dim=0) and leave the classifier (fc3) alone."
    ]
    notes += [f"{c.label}: left {name} dense ({why})" for c in result.curves for name, why in c.left_dense.items()]
    notes += [f"skipped {s.strategy}: {s.reason}" for s in result.skipped]
    parts += [Text(note, style="dim") for note in notes]
    if result.channels is not None:
        parts += channel_tables(result.channels)
    if result.gradual is not None:
        parts += gradual_table(result.gradual)
    return Group(*parts)
