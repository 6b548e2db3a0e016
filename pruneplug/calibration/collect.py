"""Forward hooks that feed the statistics of a set of layers while calibration batches run through them.

Each target gets one accumulator per statistic the strategy needs; each call
of the layer adds its first positional input (any shape ``(..., d_in)``)
and counts its rows. The hooks are removed whatever happens.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn

from ..errors import CalibrationError
from ..statistics.spec import Accumulator, Statistic
from .targets import Target

__all__ = ["Collector"]


def _input_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor | None:
    if args and isinstance(args[0], Tensor):
        return args[0]
    for value in kwargs.values():
        if isinstance(value, Tensor):
            return value
    return None


class Collector:
    """The statistics of ``targets`` over the batches run while :meth:`hooked` is active."""

    def __init__(self, targets: Sequence[Target], statistics: Sequence[Statistic]) -> None:
        self.targets = tuple(targets)
        self.statistics = tuple(statistics)
        self.rows = {target.name: 0 for target in self.targets}
        self._accumulators: dict[str, dict[str, Accumulator]] = {
            target.name: {statistic.name: statistic.create(target.module) for statistic in self.statistics}
            for target in self.targets
        }

    def _hook(self, target: Target) -> Any:
        accumulators = self._accumulators[target.name]

        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            inputs = _input_of(args, kwargs)
            if inputs is None:
                raise CalibrationError(f"layer {target.name!r} was called without a tensor input")
            inputs = inputs.detach()
            self.rows[target.name] += inputs.numel() // inputs.shape[-1] if inputs.dim() and inputs.shape[-1] else 0
            for accumulator in accumulators.values():
                accumulator.add(inputs)

        return hook

    @contextmanager
    def hooked(self) -> Iterator[Collector]:
        """Hooks on every target for the ``with`` block; removed on the way out, whatever happens."""
        handles = []
        try:
            for target in self.targets:
                handles.append(target.module.register_forward_hook(self._hook(target), with_kwargs=True))
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def results(self) -> dict[nn.Module, dict[str, Tensor]]:
        """Every target's statistics, by module, for :func:`pruneplug.using_statistics`; consumes the accumulators.

        Raises:
            CalibrationError: a target saw no rows (never called during
                calibration), when statistics are wanted.
        """
        if self.statistics:
            unseen = [name for name, rows in self.rows.items() if rows == 0]
            if unseen:
                raise CalibrationError(
                    f"no calibration rows reached {', '.join(map(repr, unseen))}: the calibration never called "
                    f"{'it' if len(unseen) == 1 else 'them'}, so there are no statistics "
                    f"({', '.join(s.name for s in self.statistics)}) to prune by; leave such layers out of targets"
                )
        out = {
            target.module: {name: accumulator.result() for name, accumulator in self._accumulators[target.name].items()}
            for target in self.targets
        }
        self._accumulators.clear()
        return out
