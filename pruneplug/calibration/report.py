"""What a calibrated prune did: per layer the amount asked and the sparsity reached, per block the output error."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any

__all__ = ["CalibrationReport", "LayerResult", "BlockResult"]


@dataclass(frozen=True)
class LayerResult:
    """One pruned layer.

    Attributes:
        amount: the amount asked for it (``None``: the strategy's own, e.g. N:M).
        sparsity: the fraction of its weight's entries pruned afterwards (all
            of them, including those pruned before).
        rows: calibration rows (tokens) its inputs held.
        block: the qualified name of its block, ``None`` outside the blocks.
        entries: how many entries its weight has.
    """

    amount: int | float | None
    sparsity: float
    rows: int
    block: str | None
    entries: int = 0


@dataclass(frozen=True)
class BlockResult:
    """One block of a sequential calibration.

    Attributes:
        name: its qualified name.
        relative_error: ``‖Y_dense - Y_pruned‖ / ‖Y_dense‖`` over all
            calibration batches, both outputs computed from the same inputs
            (those the already pruned blocks before it gave).
        seconds: time spent on it (statistics, pruning, replay).
    """

    name: str
    relative_error: float
    seconds: float


@dataclass(frozen=True)
class CalibrationReport:
    """What :func:`pruneplug.prune_calibrated` did.

    Attributes:
        strategy: the strategy's registered name.
        layers: qualified layer name -> :class:`LayerResult`, in the model's order.
        blocks: the blocks calibrated one after another (empty for a one-pass calibration).
        skipped: linear layers the default targets left out (outside the
            blocks, or the output head); name them in ``targets=`` to prune them.
        batches: calibration batches run (``-1``: a callable ran them).
        rows: the most calibration rows (tokens) any layer saw.
        seconds: the whole call's time.
    """

    strategy: str
    layers: Mapping[str, LayerResult]
    blocks: tuple[BlockResult, ...] = ()
    skipped: tuple[str, ...] = ()
    batches: int = 0
    rows: int = 0
    seconds: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", MappingProxyType(dict(self.layers)))

    @property
    def sparsity(self) -> float:
        """The fraction of all the targets' weight entries pruned (each layer weighted by its size)."""
        entries = sum(layer.entries for layer in self.layers.values())
        if entries == 0:
            return 0.0
        return sum(layer.sparsity * layer.entries for layer in self.layers.values()) / entries

    def to_dict(self) -> dict[str, Any]:
        """The report's fields as plain data for JSON: ``layers`` a dict of dicts, ``blocks`` a list of dicts.

        ``layers`` keeps the model's order; ``json.dumps`` writes the result
        as it is (the read-only ``layers`` mapping itself it cannot), and
        ``CalibrationReport(**data)`` with the layers and blocks rebuilt gives
        the report back. ``sparsity`` is derived, so it is not among them.
        """
        return {
            "strategy": self.strategy,
            "layers": {name: asdict(layer) for name, layer in self.layers.items()},
            "blocks": [asdict(block) for block in self.blocks],
            "skipped": list(self.skipped),
            "batches": self.batches,
            "rows": self.rows,
            "seconds": self.seconds,
        }

    def __str__(self) -> str:
        name_width = max([len("layer"), *(len(name) for name in self.layers)])
        lines = [f"{self.strategy}: {len(self.layers)} layers, {self.rows} rows, {self.seconds:.2f} s"]
        lines.append(f"{'layer':<{name_width}}  {'amount':>8}  {'sparsity':>8}  {'rows':>8}")
        for name, layer in self.layers.items():
            amount = "-" if layer.amount is None else f"{layer.amount:.4g}"
            lines.append(f"{name:<{name_width}}  {amount:>8}  {layer.sparsity:>8.2%}  {layer.rows:>8}")
        if self.blocks:
            block_width = max([len("block"), *(len(block.name) for block in self.blocks)])
            lines.append("")
            lines.append(f"{'block':<{block_width}}  {'rel. error':>10}  {'seconds':>8}")
            for block in self.blocks:
                lines.append(f"{block.name:<{block_width}}  {block.relative_error:>10.4g}  {block.seconds:>8.2f}")
        if self.skipped:
            lines.append("")
            lines.append("skipped (not named in targets): " + ", ".join(self.skipped))
        return "\n".join(lines)
