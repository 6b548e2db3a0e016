"""The demo's tables (rich): test accuracy against sparsity, one row per strategy.

Strategies that sweep ``amount`` get two tables with one column per amount
-- right after pruning, and after the short fine-tune; strategies without an
``amount`` (run once) get a table of their own with the sparsity they
reached.
"""

from __future__ import annotations

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from ._run import DemoResult, fine_tune_text

__all__ = ["accuracy_tables"]


def _percent(share: float) -> str:
    return f"{100.0 * share:.1f}"


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
    return Group(*parts)
