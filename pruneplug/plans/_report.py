"""What applying a plan gives back: the sparsity report, the compaction's, and each calibrated rule's.

:class:`PlanReport` is a :class:`~pruneplug.Report` (the same fields,
tables and JSON) with two more fields: ``compaction``, the
:class:`~pruneplug.CompactionReport` of a plan with ``compact = true``
(parameters and MACs before and after, channels removed, how closely the
compacted model's outputs matched), ``None`` otherwise; and ``calibration``,
the :class:`~pruneplug.CalibrationReport` of each data-aware rule by the
rule's index (per layer the amount asked, the sparsity reached and the
calibration rows; per block the relative output error; batches, rows and
seconds). Its tables and Markdown show a line per calibrated rule after the
rules, then the compaction; its JSON holds every calibration report whole
(:meth:`~pruneplug.CalibrationReport.to_dict`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, field_serializer

from ..calibration import CalibrationReport
from ..compaction import CompactionReport
from ..io.report import Report
from ..io.tables import FittedTable

if TYPE_CHECKING:
    from rich.console import RenderableType

__all__ = ["PlanReport"]

_SCHEDULED = "Scheduled rules, pruned at once to their final sparsity (pruneplug.Pruner follows the schedule)"

_COLUMNS = ("rule", "strategy", "layers", "blocks", "worst block error", "batches", "rows", "seconds")


def _calibration_cells(index: int, report: CalibrationReport) -> tuple[str, ...]:
    """One calibrated rule in a line: what it pruned, and the block its pruning changed most."""
    worst = max(report.blocks, key=lambda block: block.relative_error, default=None)
    return (
        str(index),
        report.strategy,
        str(len(report.layers)),
        str(len(report.blocks)) if report.blocks else "one pass",
        "-" if worst is None else f"{worst.relative_error:.4f} ({worst.name})",
        "run(model)" if report.batches < 0 else str(report.batches),
        str(report.rows),
        f"{report.seconds:.2f}",
    )


class PlanReport(Report):
    """The report of :func:`~pruneplug.plans.apply_plan`: sparsity, what each rule did, its calibration, and the
    compaction."""

    compaction: CompactionReport | None = Field(
        default=None, description="What compaction did, when the plan compacted the model (compact = true)."
    )
    calibration: dict[int, CalibrationReport] = Field(
        default_factory=dict,
        description="The CalibrationReport of each rule applied through pruneplug.prune_calibrated (wanda, "
        "sparsegpt, ...), by the rule's index: per layer the amount asked, the sparsity reached and the rows seen; "
        "per block the relative output error; batches, rows and seconds.",
    )

    schedules: dict[int, str] = Field(
        default_factory=dict,
        description="The schedule of each rule that has one (its own or the plan's), by the rule's index. "
        "apply_plan prunes such a rule at once to the schedule's end state: its amount is the final sparsity "
        "(the schedule's final, else params.amount); pruneplug.Pruner follows the schedule while training.",
    )

    @field_serializer("calibration")
    def _calibration_data(self, reports: dict[int, CalibrationReport]) -> dict[str, dict[str, Any]]:
        return {str(index): report.to_dict() for index, report in reports.items()}

    def _calibration_rows(self) -> list[tuple[str, ...]]:
        return [_calibration_cells(index, report) for index, report in sorted(self.calibration.items())]

    def _schedule_rows(self) -> list[tuple[str, str]]:
        return [(str(index), text) for index, text in sorted(self.schedules.items())]

    def to_markdown(self) -> str:
        """The sparsity tables, a line per calibrated rule, a line per scheduled rule, then the compaction's."""
        text = super().to_markdown()
        if self.schedules:
            lines = [f"{_SCHEDULED}:", "", "| rule | schedule |", "| --- | --- |"]
            lines += [f"| {index} | {schedule} |" for index, schedule in self._schedule_rows()]
            text = f"{text}\n" + "\n".join(lines) + "\n"
        if self.calibration:
            lines = ["| " + " | ".join(_COLUMNS) + " |", "| " + " | ".join("---" for _ in _COLUMNS) + " |"]
            lines += [
                "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in self._calibration_rows()
            ]
            text = f"{text}\n" + "\n".join(lines) + "\n"
        return text if self.compaction is None else f"{text}\n{self.compaction.to_markdown()}"

    def to_rich(self, *, tensors: bool = True) -> RenderableType:
        """The sparsity tables (``tensors=False``: rules and totals only), the calibrated rules, the compaction's."""
        from rich.console import Group

        parts = [super().to_rich(tensors=tensors)]
        if self.calibration:
            numbers = ("layers", "blocks", "batches", "rows", "seconds")
            parts.append(
                FittedTable(
                    "Calibration",
                    _COLUMNS,
                    self._calibration_rows(),
                    justify=dict.fromkeys(numbers, "right"),
                )
            )
        if self.schedules:
            parts.append(FittedTable(_SCHEDULED, ("rule", "schedule"), self._schedule_rows()))
        if self.compaction is not None:
            parts.append(self.compaction.to_rich())
        return parts[0] if len(parts) == 1 else Group(*parts)
