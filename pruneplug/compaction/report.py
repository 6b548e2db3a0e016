"""What a compaction did: parameters and MACs before and after, what was removed, how it was checked.

:class:`CompactionReport` is a frozen pydantic model, like the sparsity
report (:mod:`pruneplug.io.report`): its JSON is its schema, and it renders
for people as text (``str``), Markdown or a rich table.

>>> r = CompactionReport(
...     params_before=1000, params_after=250, macs_before=8000, macs_after=1000,
...     groups_compacted=2, channels_removed={"conv1": 4, "conv2": 8},
...     max_abs_diff=2e-7, tolerance=1e-5, verified_modes=("eval", "train"), tracer="fx",
... )
>>> r.param_reduction, r.macs_reduction
(4.0, 8.0)
>>> print(r.to_markdown())  # doctest: +NORMALIZE_WHITESPACE
| | before | after | reduction |
| --- | ---: | ---: | ---: |
| parameters | 1,000 | 250 | 4.00x |
| MACs | 8,000 | 1,000 | 8.00x |
<BLANKLINE>
2 channel groups compacted, 12 channels removed; outputs match in eval and train modes
(max |diff| 2e-07, tolerance 1e-05); traced with fx.
<BLANKLINE>
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt

from ..io.tables import FittedTable

if TYPE_CHECKING:
    from rich.console import RenderableType

__all__ = ["CompactionReport", "VerifiedMode"]

VerifiedMode = Literal["eval", "train"]


class CompactionReport(BaseModel):
    """The outcome of :func:`pruneplug.compact` on one model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    params_before: NonNegativeInt = Field(description="Parameters of the masked model (each tensor counted whole).")
    params_after: NonNegativeInt = Field(description="Parameters of the compacted model.")
    macs_before: NonNegativeInt = Field(description="Multiply-accumulates of one forward on the example inputs.")
    macs_after: NonNegativeInt = Field(description="The same, after compaction.")
    groups_compacted: NonNegativeInt = Field(description="Coupled channel groups that lost channels.")
    channels_removed: dict[str, NonNegativeInt] = Field(description="Per channel group (by name), channels removed.")
    max_abs_diff: NonNegativeFloat = Field(
        description="Largest absolute difference between the outputs of the masked and the compacted model."
    )
    tolerance: NonNegativeFloat = Field(description="The largest difference accepted.")
    verified_modes: tuple[VerifiedMode, ...] = Field(description="The modes in which the outputs were compared.")
    tracer: str = Field(description="How the channel graph was traced.")
    config_sizes: dict[str, NonNegativeInt] = Field(
        default_factory=dict,
        description="Sizes written into a Hugging Face model's config (hidden_size, num_attention_heads, ...).",
    )
    per_layer_sizes: dict[str, list[NonNegativeInt]] = Field(
        default_factory=dict,
        description="Config fields whose value differs between layers: the config cannot state them,"
        " so from_pretrained cannot rebuild the model (pruneplug.load_compacted can).",
    )
    config_mismatches: list[str] = Field(
        default_factory=list,
        description="Tensors a model built from the rewritten config would size otherwise (empty: it describes"
        " the model, and from_pretrained rebuilds it).",
    )

    @property
    def param_reduction(self) -> float:
        """``params_before / params_after``: 2.0 means half the parameters are left."""
        return _ratio(self.params_before, self.params_after)

    @property
    def macs_reduction(self) -> float:
        """``macs_before / macs_after``: 2.0 means half the multiply-accumulates are left."""
        return _ratio(self.macs_before, self.macs_after)

    @property
    def total_channels_removed(self) -> int:
        """Channels removed, over every group."""
        return sum(self.channels_removed.values())

    def to_json(self, *, indent: int | None = 2) -> str:
        """The report as JSON (its fields; the reductions are derived from them)."""
        return self.model_dump_json(indent=indent)

    def to_markdown(self) -> str:
        """The report as a Markdown table (before, after, reduction) and one line on the rest."""
        lines = ["| | before | after | reduction |", "| --- | ---: | ---: | ---: |"]
        lines += ["| " + " | ".join(row) + " |" for row in self._rows()]
        lines += ["", self._summary(), ""]
        return "\n".join(lines)

    def to_rich(self) -> RenderableType:
        """The report as a rich table and the same line on the rest (needs rich, from the ``cli`` extra)."""
        from rich.console import Group
        from rich.text import Text  # literal text: group names are never rich markup

        justify: dict[str, Literal["left", "right"]] = {"before": "right", "after": "right", "reduction": "right"}
        table = FittedTable("Compaction", ("", "before", "after", "reduction"), self._rows(), justify=justify)
        return Group(table, Text(self._summary(), no_wrap=False, overflow="fold"))

    def __str__(self) -> str:
        return (
            f"Compacted {_groups(self.groups_compacted)} ({self.total_channels_removed:,} channels removed): "
            f"parameters {self.params_before:,} -> {self.params_after:,} ({_times(self.param_reduction)} fewer), "
            f"MACs {self.macs_before:,} -> {self.macs_after:,} ({_times(self.macs_reduction)} fewer); "
            f"{self._checked()}; traced with {self.tracer}.{self._config()}"
        )

    def _config(self) -> str:
        if self.per_layer_sizes or self.config_mismatches:
            what = ", ".join(sorted(self.per_layer_sizes)) or f"{len(self.config_mismatches)} tensor shapes"
            return f" The config cannot state {what}: load the saved model with pruneplug.load_compacted."
        if self.config_sizes:
            return " Config: " + ", ".join(f"{k}={v}" for k, v in self.config_sizes.items()) + "."
        return ""

    def _rows(self) -> list[tuple[str, str, str, str]]:
        return [
            ("parameters", f"{self.params_before:,}", f"{self.params_after:,}", _times(self.param_reduction)),
            ("MACs", f"{self.macs_before:,}", f"{self.macs_after:,}", _times(self.macs_reduction)),
        ]

    def _summary(self) -> str:
        return (
            f"{_groups(self.groups_compacted)} compacted, {self.total_channels_removed:,} channels removed; "
            f"{self._checked()}; traced with {self.tracer}.{self._config()}"
        )

    def _checked(self) -> str:
        if not self.verified_modes:
            return "outputs not compared"
        modes = " and ".join(self.verified_modes)
        plural = "modes" if len(self.verified_modes) > 1 else "mode"
        return f"outputs match in {modes} {plural} (max |diff| {self.max_abs_diff:.3g}, tolerance {self.tolerance:.3g})"


def _ratio(before: int, after: int) -> float:
    if after == 0:
        return 1.0 if before == 0 else float("inf")
    return before / after


def _times(ratio: float) -> str:
    return "inf" if ratio == float("inf") else f"{ratio:.2f}x"


def _groups(count: int) -> str:
    return f"{count} channel group" + ("" if count == 1 else "s")
