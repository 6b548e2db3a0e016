"""The demo's tables (rich): test accuracy against sparsity, one row per strategy.

Strategies that sweep ``amount`` get two tables with one column per amount
-- right after pruning, and after the short fine-tune; strategies without an
``amount`` (run once) get a table of their own with the sparsity they
reached.
"""

from __future__ import annotations

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ._run import DemoResult, fine_tune_text

__all__ = ["accuracy_tables"]


def _percent(share: float) -> str:
    return f"{100.0 * share:.1f}"


def _swept_table(result: DemoResult, title: str, fine_tuned: bool) -> Table:
    # Compact (no vertical rules, one space of padding): eleven amount columns fit in about 100 characters.
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    table.add_column("strategy \\ amount %", no_wrap=True)
    for amount in result.config.amounts:
        table.add_column(f"{100.0 * amount:g}", justify="right", no_wrap=True)
    for curve in result.curves:
        if curve.points and curve.points[0].amount is not None:
            cells = [_percent(p.accuracy_fine_tuned if fine_tuned else p.accuracy) for p in curve.points]
            table.add_row(curve.label, *cells)
    return table


def accuracy_tables(result: DemoResult) -> RenderableType:
    """Everything ``pruneplug demo`` prints about the results, as one rich renderable."""
    parts: list[RenderableType] = [
        Text(
            f"LeNet trained for {result.config.epochs} epochs on {result.data_sizes[0]} digits: "
            f"{_percent(result.baseline_accuracy)}% test accuracy on {result.data_sizes[1]} held-out digits "
            f"(chance: 10%)."
        ),
        _swept_table(result, "Test accuracy (%) right after pruning", fine_tuned=False),
        _swept_table(
            result,
            f"Test accuracy (%) after {fine_tune_text(result)}",
            fine_tuned=True,
        ),
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
