"""What applying a plan gives back: the sparsity report, and the compaction's when the plan compacted.

:class:`PlanReport` is a :class:`~pruneplug.Report` (the same fields,
tables and JSON) with one more field, ``compaction``: the
:class:`~pruneplug.CompactionReport` of a plan with ``compact = true``
(parameters and MACs before and after, channels removed, how closely the
compacted model's outputs matched), ``None`` otherwise. Its tables and
Markdown show the compaction after the sparsity.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from ..compaction import CompactionReport
from ..io.report import Report

if TYPE_CHECKING:
    from rich.console import RenderableType

__all__ = ["PlanReport"]


class PlanReport(Report):
    """The report of :func:`~pruneplug.plans.apply_plan`: sparsity, what each rule did, and the compaction."""

    compaction: CompactionReport | None = Field(
        default=None, description="What compaction did, when the plan compacted the model (compact = true)."
    )

    def to_markdown(self) -> str:
        """The sparsity tables, then the compaction's."""
        text = super().to_markdown()
        return text if self.compaction is None else f"{text}\n{self.compaction.to_markdown()}"

    def to_rich(self, *, tensors: bool = True) -> RenderableType:
        """The sparsity tables (``tensors=False``: rules and totals only), then the compaction's."""
        from rich.console import Group

        shown = super().to_rich(tensors=tensors)
        return shown if self.compaction is None else Group(shown, self.compaction.to_rich())
