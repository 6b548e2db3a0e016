"""Forward hooks that feed the statistics of a set of layers while calibration batches run through them.

Each target gets one accumulator per statistic the strategy needs; each call
of the layer adds its first positional input (any shape ``(..., d_in)``)
and counts its rows. The hooks are removed whatever happens.

Layers fed the very same tensor -- a transformer's query, key and value
projections, an MLP's gate and up projections -- share their accumulators
when ``share=True`` and every statistic declares ``inputs_only``: one
Hessian for the three attention projections instead of three, which is both
the memory and the time of two. Whether two layers are fed the same tensor
is seen on the first call (the same object, not modified in between); from
then on each call of a layer that shares must be fed, in order, exactly
what its leader was fed, call for call, and if it is not (or the leader
gets calls it does not), :attr:`Collector.sharing_broke` tells the caller to
collect again without sharing.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn

from ..errors import CalibrationError
from ..statistics.spec import Accumulator, Statistic, input_dim
from .targets import Target

__all__ = ["Collector"]

_RECENT = 64
"""How many recently added inputs are remembered to find layers fed the same tensor (dead ones are dropped first)."""


def _input_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor | None:
    if args and isinstance(args[0], Tensor):
        return args[0]
    for value in kwargs.values():
        if isinstance(value, Tensor):
            return value
    return None


class Collector:
    """The statistics of ``targets`` over the batches run while :meth:`hooked` is active.

    Args:
        targets: the layers measured.
        statistics: what is measured on each.
        share: let layers fed the same tensor share their accumulators
            (when every statistic is ``inputs_only``); the batches must then
            be run again without sharing if :attr:`sharing_broke`.
    """

    def __init__(self, targets: Sequence[Target], statistics: Sequence[Statistic], *, share: bool = False) -> None:
        self.targets = tuple(targets)
        self.statistics = tuple(statistics)
        self.rows = {target.name: 0 for target in self.targets}
        self._broke = False
        self._share = share and bool(self.statistics) and all(s.inputs_only for s in self.statistics)
        self._accumulators: dict[str, dict[str, Accumulator]] = {}
        self._leader: dict[str, str] = {}  # a layer that shares -> the layer whose accumulators it uses
        self._adds: dict[str, int] = {}  # a layer that accumulates -> how many inputs it added
        self._matched: dict[str, int] = {}  # a layer that shares -> how many of its leader's inputs it was fed
        # id(input) -> (the input, its version then, {layer that added it: the how-manieth of its inputs})
        self._recent: dict[int, tuple[weakref.ref[Tensor], int, dict[str, int]]] = {}
        self._kind = {target.name: _kind(target.module) for target in self.targets} if self._share else {}

    @property
    def sharing_broke(self) -> bool:
        """Whether a layer that shares was not fed exactly its leader's inputs: collect again, with ``share=False``."""
        return self._broke or any(self._matched[name] != self._adds[leader] for name, leader in self._leader.items())

    def _added_by(self, inputs: Tensor) -> dict[str, int]:
        """The layers that added this very tensor, unchanged since, as far as remembered: the how-manieth input."""
        found = self._recent.get(id(inputs))
        if found is None or found[0]() is not inputs or found[1] != _version(inputs):
            return {}
        return found[2]

    def _remember(self, inputs: Tensor, name: str) -> None:
        self._adds[name] = count = self._adds.get(name, 0) + 1
        version = _version(inputs)
        if version is None:  # (an inference tensor has none: it is never shared)
            return
        added = self._added_by(inputs)
        if added:
            added[name] = count
            return
        if len(self._recent) >= _RECENT:
            self._recent = {key: value for key, value in self._recent.items() if value[0]() is not None}
            while len(self._recent) >= _RECENT:
                del self._recent[next(iter(self._recent))]
        self._recent[id(inputs)] = (weakref.ref(inputs), version, {name: count})

    def _accumulators_for(self, target: Target, inputs: Tensor) -> dict[str, Accumulator] | None:
        """The accumulators this call feeds, or ``None`` when the layer shares and its leader already took it."""
        name = target.name
        if name in self._leader:
            fed = self._added_by(inputs).get(self._leader[name])
            if fed != self._matched[name] + 1:  # not its leader's next input: collect again, unshared
                self._broke = True
            else:
                self._matched[name] = fed
            return None
        if name not in self._accumulators:  # its first call: share if fed the first input of a layer alike
            added = self._added_by(inputs)
            same = [other for other, count in added.items() if count == 1 and self._kind[other] == self._kind[name]]
            if same:
                self._leader[name] = same[0]
                self._matched[name] = 1
                return None
            self._accumulators[name] = {
                statistic.name: statistic.create(target.module) for statistic in self.statistics
            }
        if self._share:
            self._remember(inputs, name)
        return self._accumulators[name]

    def _hook(self, target: Target) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            inputs = _input_of(args, kwargs)
            if inputs is None:
                raise CalibrationError(f"layer {target.name!r} was called without a tensor input")
            self.rows[target.name] += inputs.numel() // inputs.shape[-1] if inputs.dim() and inputs.shape[-1] else 0
            accumulators = self._accumulators_for(target, inputs)
            if accumulators:
                detached = inputs.detach()
                for accumulator in accumulators.values():
                    accumulator.add(detached)

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
            self._recent.clear()

    @property
    def shared(self) -> dict[str, str]:
        """``{layer: the layer whose statistics it shares}`` for the layers that share (empty unless ``share``)."""
        return dict(self._leader)

    def results(self) -> dict[nn.Module, dict[str, Tensor]]:
        """Every target's statistics, by module, for :func:`pruneplug.using_statistics`; consumes the accumulators.

        Layers that share get the same tensors (strategies must not modify
        statistics in place).

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
        own = {
            name: {statistic: accumulator.result() for statistic, accumulator in accumulators.items()}
            for name, accumulators in self._accumulators.items()
        }
        out = {
            target.module: own[self._leader.get(target.name, target.name)] if self.statistics else {}
            for target in self.targets
        }
        self._accumulators.clear()
        return out


def _kind(module: nn.Module) -> tuple[type[nn.Module], int | None]:
    """A layer's type and input width: only layers alike in both share statistics."""
    weight = module._parameters.get("weight_orig", module._parameters.get("weight"))
    return type(module), None if weight is None or weight.dim() < 2 else int(weight.shape[input_dim(module)])


def _version(tensor: Tensor) -> int | None:
    """The tensor's in-place version counter (``None`` for an inference tensor, which has none)."""
    try:
        return int(tensor._version)
    except RuntimeError:
        return None
