"""Calibration statistics: what a data-aware strategy measures of the inputs its layers see.

A :class:`Statistic` is a name and a factory of :class:`Accumulator` objects:
one per layer, fed every calibration input of that layer by a forward hook,
in constant memory however many batches run. A strategy says which it needs
by implementing :class:`NeedsStatistics`; :func:`pruneplug.prune_calibrated`
then collects exactly those, and the strategy reads them with
:func:`~pruneplug.statistics.context.statistics_for`.

The built-ins, registered through the ``pruneplug_add_statistics`` hook as a
plugin's would be:

``input_sq_norms``
    per input feature ``j``, the mean over calibration rows of ``x_j**2``:
    shape ``(d_in,)``. Wanda's ``||X_j||_2`` is ``sqrt(rows * mean)``: a
    factor shared by every layer that sees the same rows.
``input_hessian``
    the mean over rows of ``x x^T``: shape ``(d_in, d_in)``. SparseGPT's
    ``H = 2 X X^T`` up to a factor, which its relative dampening cancels.

A *row* is one input vector of the layer: a token of a sequence (every dim of
the input but the last counts rows). Both are accumulated in fp32 whatever
the model's dtype, as running means (no sum grows with the number of batches).

>>> import torch
>>> layer = torch.nn.Linear(3, 2)
>>> norms = INPUT_SQ_NORMS.create(layer)
>>> norms.add(torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]]))
>>> norms.result(), norms.rows
(tensor([5., 2., 0.]), 2)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from ..errors import CalibrationError
from ..layers import is_transposed_linear

__all__ = [
    "Accumulator",
    "Statistic",
    "NeedsStatistics",
    "BUILTIN_STATISTICS",
    "INPUT_SQ_NORMS",
    "INPUT_HESSIAN",
    "input_dim",
    "input_features",
]


@runtime_checkable
class Accumulator(Protocol):
    """One layer's running statistic: fed each calibration input, asked for the result at the end."""

    rows: int
    """How many input rows it has seen."""

    def add(self, inputs: Tensor) -> None:
        """Take in one calibration input of the layer: its first positional argument, shape ``(..., d_in)``."""
        ...

    def result(self) -> Tensor:
        """The statistic over every input seen so far."""
        ...


@dataclass(frozen=True)
class Statistic:
    """A named statistic of a layer's calibration inputs, and how to accumulate it.

    Attributes:
        name: how strategies ask for it (``"input_hessian"``); lowercase
            letters, digits and underscores, starting with a letter.
        create: ``create(module) -> Accumulator`` for one layer; raises
            :class:`~pruneplug.CalibrationError` for a layer it cannot measure.
        summary: one line for ``pruneplug list`` and the docs.
        inputs_only: whether it depends on nothing but the inputs a layer is
            fed (not on the layer's weights or outputs), so that layers of
            one type and input width fed the very same tensor (a
            transformer's query, key and value projections) can share one
            accumulator, and get the same result tensor: strategies must not
            modify statistics in place.
    """

    name: str
    create: Callable[[nn.Module], Accumulator]
    summary: str = ""
    inputs_only: bool = False


@runtime_checkable
class NeedsStatistics(Protocol):
    """A strategy that reads statistics of calibration data (``wanda``, ``sparsegpt``, a plugin's)."""

    def required_statistics(self) -> tuple[str, ...]:
        """The names of the statistics it reads, for every tensor it prunes (may be empty)."""
        ...


def input_features(module: nn.Module) -> int:
    """The width of a linear layer's inputs (``in_features``; GPT-2's ``Conv1D``: its weight's rows).

    Raises:
        CalibrationError: ``module`` is not a linear layer.
    """
    if isinstance(module, nn.Linear):
        return int(module.in_features)
    if is_transposed_linear(module):
        weight = module._parameters.get("weight_orig", module._parameters.get("weight"))
        assert weight is not None
        return int(weight.shape[0])
    raise CalibrationError(
        f"the built-in calibration statistics measure the inputs of linear layers (nn.Linear, GPT-2's Conv1D); "
        f"{type(module).__name__} is not one: leave it out of the targets",
        module_type=type(module).__name__,
    )


def input_dim(module: nn.Module) -> int:
    """The dim of a linear layer's 2-D weight that meets its input features: 1, or 0 for GPT-2's ``Conv1D``."""
    return 0 if is_transposed_linear(module) else 1


def _rows(module: nn.Module, inputs: Tensor, width: int) -> Tensor:
    """``inputs`` as fp32 rows of ``width`` features, checked."""
    if not isinstance(inputs, Tensor) or inputs.dim() == 0 or inputs.shape[-1] != width:
        got = f"shape {tuple(inputs.shape)}" if isinstance(inputs, Tensor) else type(inputs).__name__
        raise CalibrationError(
            f"expected the layer's input to end in its {width} input features, got {got}",
            module_type=type(module).__name__,
        )
    return inputs.detach().reshape(-1, width).float()


class _RunningMean(ABC):
    """A running mean, over the layer's input rows, of a quantity each row gives (fp32, in place).

    The bookkeeping every built-in shares: the rows checked and reshaped to
    ``(rows, d_in)``, counted, and folded into one buffer whose size does not
    grow with the batches. Subclasses say the result's shape and how a batch
    of rows is folded in.
    """

    def __init__(self, module: nn.Module) -> None:
        self._module = module
        self._width = input_features(module)
        self._mean: Tensor | None = None
        self.rows = 0

    @abstractmethod
    def _shape(self) -> tuple[int, ...]:
        """The result's shape (zeros of it before any row is seen)."""

    @abstractmethod
    def _fold(self, mean: Tensor | None, rows: Tensor, total: int) -> Tensor:
        """The mean over ``total`` rows: ``mean`` (over ``self.rows``; ``None`` before any) with ``rows`` in."""

    def add(self, inputs: Tensor) -> None:
        rows = _rows(self._module, inputs, self._width)
        if rows.shape[0] == 0:
            return
        total = self.rows + rows.shape[0]
        self._mean = self._fold(self._mean, rows, total)
        self.rows = total

    def result(self) -> Tensor:
        if self._mean is None:
            return torch.zeros(self._shape())
        return self._mean


class _SquaredNorms(_RunningMean):
    """Running mean over rows of each input feature's square."""

    def _shape(self) -> tuple[int, ...]:
        return (self._width,)

    def _fold(self, mean: Tensor | None, rows: Tensor, total: int) -> Tensor:
        batch = rows.square().sum(dim=0)
        if mean is None:
            return batch.div_(total)
        return mean.mul_(self.rows / total).add_(batch, alpha=1.0 / total)


class _Hessian(_RunningMean):
    """Running mean over rows of ``x x^T``."""

    def _shape(self) -> tuple[int, ...]:
        return (self._width, self._width)

    def _fold(self, mean: Tensor | None, rows: Tensor, total: int) -> Tensor:
        if mean is None:
            mean = torch.zeros(self._width, self._width, device=rows.device)
        # mean <- mean * old/total + X^T X / total, in place: one d_in x d_in buffer per layer
        return mean.addmm_(rows.T, rows, beta=self.rows / total, alpha=1.0 / total)


INPUT_SQ_NORMS = Statistic(
    "input_sq_norms",
    _SquaredNorms,
    summary="mean over rows of each input feature squared, (d_in,): Wanda's ||X_j||^2 up to the row count",
    inputs_only=True,
)
INPUT_HESSIAN = Statistic(
    "input_hessian",
    _Hessian,
    summary="mean over rows of x x^T, (d_in, d_in) fp32: the layer-wise Hessian of SparseGPT/OBS",
    inputs_only=True,
)

BUILTIN_STATISTICS = (INPUT_SQ_NORMS, INPUT_HESSIAN)
"""The statistics pruneplug registers itself (through the same hook as plugins)."""
