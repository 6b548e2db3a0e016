"""Calibration data for the checks of strategies that read statistics (:class:`pruneplug.NeedsStatistics`).

Each layer the checks prune gets random calibration inputs of its own, drawn
in styles that stress data-aware criteria: features of one scale, of very
unequal scales, features that are never active (a singular Hessian), and
rare outliers. The statistics a strategy requires are made from those inputs
the way :func:`pruneplug.prune_calibrated` makes them: the registry's
:class:`pruneplug.Statistic` creates an accumulator for the layer, which is
fed every input. The checks then prune inside
:func:`pruneplug.using_statistics`.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from hypothesis import strategies as st
from hypothesis.strategies import DataObject
from torch import Tensor, nn

from ..errors import PruneplugError
from ..registry import get_registry
from ..statistics.context import using_statistics
from ._assertions import Failure, LinearHolder, expect

__all__ = ["STYLES", "Calibration", "calibration_inputs"]

STYLES = ("normal", "scaled", "dead", "outliers")
"""How calibration inputs are drawn: i.i.d. normal; per-feature scales spread over six orders of
magnitude; about half the features never active (always zero); normal with rare outliers 30 times larger."""

_BATCH_SHAPES = st.lists(
    st.tuples(st.integers(1, 4)) | st.tuples(st.integers(1, 2), st.integers(1, 3)), min_size=1, max_size=3
)


def calibration_inputs(
    seed: int, style: str, batches: Sequence[tuple[int, ...]], width: int, dtype: torch.dtype
) -> list[Tensor]:
    """Calibration inputs of a layer with ``width`` input features: one tensor ``(*lead, width)`` per batch.

    >>> [tuple(x.shape) for x in calibration_inputs(0, "scaled", [(3,), (2, 2)], 4, torch.float32)]
    [(3, 4), (2, 2, 4)]
    """
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r} of calibration inputs; the styles are {', '.join(STYLES)}")
    generator = torch.Generator().manual_seed(seed)
    scale = torch.ones(width, dtype=torch.float64)
    if style == "scaled":
        # (bounded: float16 inputs stay finite, outliers included)
        scale = torch.exp(2.0 * torch.randn(width, generator=generator, dtype=torch.float64)).clamp(1e-3, 1e3)
    elif style == "dead":
        scale = (torch.rand(width, generator=generator) < 0.5).to(torch.float64)
    inputs = []
    for lead in batches:
        x = torch.randn(*lead, width, generator=generator, dtype=torch.float64) * scale
        if style == "outliers":
            x = torch.where(torch.rand(x.shape, generator=generator) < 0.1, 30.0 * x, x)
        inputs.append(x.to(dtype))
    return inputs


class Calibration:
    """The calibration inputs of every layer a check prunes, and the statistics made from them.

    Layers are held weakly: what a finished example made goes with it.
    """

    def __init__(self) -> None:
        self._inputs: weakref.WeakKeyDictionary[nn.Module, list[Tensor]] = weakref.WeakKeyDictionary()
        self._made: weakref.WeakKeyDictionary[nn.Module, dict[str, Tensor]] = weakref.WeakKeyDictionary()

    def draw(self, data: DataObject, module: LinearHolder) -> None:
        """Draw calibration inputs for ``module`` (in its dtype, as a forward would give them)."""
        seed = data.draw(st.integers(0, 2**32 - 1), label="calibration seed")
        style = data.draw(st.sampled_from(STYLES), label="calibration inputs")
        batches = data.draw(_BATCH_SHAPES, label="calibration batch shapes")
        self._inputs[module] = calibration_inputs(seed, style, batches, module.in_features, self._dtype(module))

    def share(self, source: nn.Module, target: nn.Module) -> None:
        """Give ``target`` the calibration inputs of ``source`` (a twin, for the determinism check)."""
        self._inputs[target] = self._inputs[source]

    @staticmethod
    def _dtype(module: nn.Module) -> torch.dtype:
        weight = module._parameters.get("weight_orig", module._parameters.get("weight"))
        assert weight is not None
        return weight.dtype

    def statistics(self, module: nn.Module, names: Sequence[str]) -> dict[str, Tensor]:
        """The statistics ``names`` of ``module``'s calibration inputs, made by the registry's statistics."""
        inputs = self._inputs.get(module)
        if inputs is None:  # pragma: no cover - every module the checks prune has inputs drawn
            raise RuntimeError(f"no calibration inputs were drawn for {module!r}")
        made = self._made.setdefault(module, {})
        for name in names:
            if name not in made:
                made[name] = accumulate(name, module, inputs)
        return {name: made[name] for name in names}

    def wrong_shape(self, data: DataObject, module: LinearHolder, name: str, right: Tensor) -> Tensor:
        """Statistic ``name`` of the wrong shape for ``module``: the one of a layer of another width.

        That is the mix-up that happens (statistics of another layer). A
        statistic whose shape does not depend on the width gets a trailing
        dim of 2 instead.
        """
        width = module.in_features
        widths = sorted({width + 1, 2 * width + 1} | ({width - 1} if width > 1 else set()))
        other_width = data.draw(st.sampled_from(widths), label="width of the wrong statistic")
        other = LinearHolder(torch.zeros(module.out_features, other_width, dtype=self._dtype(module)))
        inputs = calibration_inputs(0, "normal", [(4,)], other_width, self._dtype(module))
        wrong = accumulate(name, other, inputs)
        if wrong.shape == right.shape:
            wrong = torch.rand(*right.shape, 2, generator=torch.Generator().manual_seed(0)) + 0.5
        return wrong

    @contextmanager
    def in_use(self, modules: Sequence[nn.Module], names: Sequence[str]) -> Iterator[None]:
        """Statistics ``names`` of every module in ``modules`` in use (nothing in use if ``names`` is empty)."""
        if not names:
            yield
            return
        statistics: Mapping[nn.Module, Mapping[str, Tensor]] = {m: self.statistics(m, names) for m in modules}
        with using_statistics(statistics):
            yield


def accumulate(name: str, module: nn.Module, inputs: Sequence[Tensor]) -> Tensor:
    """Statistic ``name`` of ``inputs`` to ``module``: the registry's accumulator, fed every input."""
    try:
        statistic = get_registry().get_statistic(name)
    except PruneplugError as error:
        raise Failure(
            f"the strategy requires the statistic {name!r} (required_statistics()), which the registry cannot "
            f"give: {error} (a plugin adds statistics with the pruneplug_add_statistics hook)"
        ) from error
    layer = f"an nn.Linear({getattr(module, 'in_features', '?')}, {getattr(module, 'out_features', '?')})"
    try:
        accumulator = statistic.create(module)
        for batch in inputs:
            accumulator.add(batch)
        value = accumulator.result()
    except Exception as error:
        raise Failure(
            f"accumulating the statistic {name!r} of {layer}'s calibration inputs failed: "
            f"{type(error).__name__}: {error}"
        ) from error
    expect(
        isinstance(value, Tensor),
        f"the statistic {name!r} of {layer} is a {type(value).__name__}, not a tensor (its accumulator's result())",
    )
    return value
