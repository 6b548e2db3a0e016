"""The gradual against one-shot comparison's files: a markdown table and a plot of accuracy against step.

:func:`gradual_markdown` is the table ``gradual-vs-one-shot.md`` holds (and
the docs quote); :func:`draw_gradual_plot` draws one panel per target
sparsity on a bare :class:`matplotlib.figure.Figure`: the median test
accuracy over the seeds against the step for each method, the seeds' range
shaded around it, and each pruned method's target sparsity (its schedule's,
step by step: the count reached is exact, see ``docs/training.md``) on a
second axis.
"""

from __future__ import annotations

import statistics
from typing import IO

from ..api import make_schedule
from ._data import NUM_CLASSES
from ._gradual import GRADUAL_STRATEGY, GradualComparison, GradualRow, Method

__all__ = [
    "GRADUAL_PLOT_FILE",
    "GRADUAL_TABLE_FILE",
    "TABLE_HEADER",
    "gradual_markdown",
    "table_rows",
    "draw_gradual_plot",
    "method_label",
]

GRADUAL_PLOT_FILE = "gradual-vs-one-shot.png"
GRADUAL_TABLE_FILE = "gradual-vs-one-shot.md"

_COLOURS: dict[Method, str] = {"dense": "grey", "one-shot": "#d62728", "gradual": "#1f77b4"}


def method_label(method: Method) -> str:
    """What tables and the plot call a method (``"gradual (cubic)"``)."""
    return {"dense": "dense", "one-shot": "one-shot", "gradual": "gradual (cubic)"}[method]


def _percent(share: float) -> str:
    return f"{100.0 * share:.1f}"


def _row_cells(row: GradualRow) -> list[str]:
    return [
        method_label(row.method),
        f"{100.0 * row.target:g}" if row.method != "dense" else "0",
        _percent(row.sparsity),
        _percent(row.at_ramp_end),
        _percent(row.accuracy),
        _percent(row.accuracy_min),
        _percent(row.accuracy_max),
    ]


TABLE_HEADER = (
    "method",
    "target %",
    "sparsity %",
    "accuracy at ramp end %",
    "final accuracy %, median",
    "min",
    "max",
)
"""The columns of the table (markdown and printed)."""


def gradual_markdown(comparison: GradualComparison) -> str:
    """The comparison as a markdown table with a sentence on how it was run; ends with a newline."""
    settings = comparison.settings
    seeds = len(settings.seeds)
    lines = [
        f"LeNet on scikit-learn's digits, {settings.total_steps} Adam steps (learning rate {settings.learning_rate:g}, "
        f"{settings.batch_size} images a step) for every run; {GRADUAL_STRATEGY}, global over every conv and linear "
        f"weight. One-shot: dense to step {settings.ramp_end}, pruned there at once. Gradual: cubic from step "
        f"{settings.warmup} to {settings.ramp_end}, every {settings.every} steps. Both then fine-tune for "
        f"{settings.fine_tune_steps} steps. Test accuracy on the held-out digits, median over "
        f"{seeds} seed{'' if seeds == 1 else 's'} ({', '.join(map(str, settings.seeds))}); "
        f"at ramp end: right after step {settings.ramp_end} (one-shot: right after pruning, before fine-tuning).",
        "",
        "| " + " | ".join(TABLE_HEADER) + " |",
        "| " + " | ".join("---" for _ in TABLE_HEADER) + " |",
    ]
    lines += ["| " + " | ".join(_row_cells(row)) + " |" for row in comparison.rows]
    return "\n".join(lines) + "\n"


def table_rows(comparison: GradualComparison) -> list[list[str]]:
    """The printed table's cells, row by row: the markdown table's without the target (the sparsity shows it)."""
    return [[cells[0], *cells[2:]] for cells in map(_row_cells, comparison.rows)]


def draw_gradual_plot(comparison: GradualComparison, file: IO[bytes], *, seed: int) -> None:
    """Write the comparison's plot to ``file`` as PNG (``seed``: the demo's, for the title)."""
    from matplotlib.figure import Figure

    settings = comparison.settings
    figure = Figure(figsize=(6.0 * len(settings.amounts), 5.5), layout="constrained")
    axes = figure.subplots(1, len(settings.amounts), squeeze=False)[0]
    for ax, amount in zip(axes, settings.amounts):
        sparsity_ax = ax.twinx()
        drawn: tuple[tuple[Method, float], ...] = (("dense", 0.0), ("one-shot", amount), ("gradual", amount))
        for method, target in drawn:
            runs = comparison.runs_of(method, target)
            steps = runs[0].steps
            by_step = list(zip(*(run.accuracy for run in runs)))
            colour = _COLOURS[method]
            ax.plot(
                steps,
                [100.0 * statistics.median(values) for values in by_step],
                color=colour,
                linewidth=2.0,
                label=f"{method_label(method)}: test accuracy",
            )
            if len(runs) > 1:
                ax.fill_between(
                    steps,
                    [100.0 * min(values) for values in by_step],
                    [100.0 * max(values) for values in by_step],
                    color=colour,
                    alpha=0.2,
                    linewidth=0,
                )
            if method != "dense":
                schedule = make_schedule(settings.schedule(method))
                sparsity_ax.plot(
                    range(settings.total_steps + 1),
                    [0.0] + [100.0 * schedule.at(step, final=amount) for step in range(settings.total_steps)],
                    color=colour,
                    linestyle=":",
                    linewidth=1.5,
                    drawstyle="steps-post",
                    label=f"{method_label(method)}: target sparsity",
                )
        for step in (settings.warmup, settings.ramp_end):
            ax.axvline(step + 1, color="grey", linewidth=0.8, linestyle="--")
        ax.axhline(100.0 / NUM_CLASSES, color="grey", linestyle=":", linewidth=1)
        ax.set_title(f"to {100.0 * amount:g}% sparsity")
        ax.set_xlabel(
            f"optimizer steps (dashed: gradual starts at {settings.warmup + 1}, both reach the target at "
            f"{settings.ramp_end + 1})"
        )
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(0, 100)
        ax.set_xlim(0, settings.total_steps)
        ax.grid(alpha=0.3)
        sparsity_ax.set_ylabel("sparsity of the conv and linear weights (%)")
        sparsity_ax.set_ylim(0, 100)
        handles, labels = ax.get_legend_handles_labels()
        more_handles, more_labels = sparsity_ax.get_legend_handles_labels()
        ax.legend(handles + more_handles, labels + more_labels, loc="lower right", fontsize="small")
    seeds = len(settings.seeds)
    figure.suptitle(
        f"LeNet on the digits: one-shot against gradual pruning, {settings.total_steps} steps each "
        f"(median of {seeds} seed{'' if seeds == 1 else 's'}"
        + (", shaded: their range" if seeds > 1 else "")
        + f"; demo seed {seed})"
    )
    figure.savefig(file, format="png", dpi=100)
