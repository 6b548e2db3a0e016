"""Strategies that score entries or slices and let pruneplug's selectors pick.

Most strategies are *how to score* plus *how to pick*. Subclass
:class:`UnstructuredStrategy` and implement :meth:`~UnstructuredStrategy.scores`
(lowest scores are pruned first), or :class:`StructuredStrategy` and implement
:meth:`~StructuredStrategy.slice_scores`; the exact, tie-safe selection, the
``amount`` rules, iterative pruning and global pruning across tensors come
for free and run on the fast selection code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from pydantic import StrictBool
from torch import Tensor

from .._amount import check_amount_like_torch, count_to_prune
from .._container import normalize_dim
from .._method import BasePruningMethod
from .._packed import plain
from .._params import AmountField, DimField, StrategyParams
from .._select import ScoreSource, keep_highest_across, select_lowest_slices

__all__ = ["AmountParams", "StructuredParams", "UnstructuredStrategy", "StructuredStrategy"]


class AmountParams(StrategyParams):
    """Parameters of a strategy that prunes an ``amount``."""

    amount: AmountField


class StructuredParams(AmountParams):
    """Parameters of a structured strategy: ``amount`` counts slices along ``dim``."""

    dim: DimField = -1
    prune_bias: StrictBool = False


class UnstructuredStrategy(BasePruningMethod):
    """Prune the ``amount`` lowest-scoring still-unpruned entries.

    Subclasses implement :meth:`scores`. Works locally, iteratively and with
    :func:`pruneplug.prune_global` across many tensors.
    """

    PRUNING_TYPE: ClassVar[str] = "unstructured"
    Params: ClassVar[type[StrategyParams]] = AmountParams
    #: ``True`` if each entry's score depends on that entry alone (like ``|w|``):
    #: then scores are computed chunk by chunk and never held whole.
    elementwise_scores: ClassVar[bool] = False

    def __init__(self, amount: int | float) -> None:
        check_amount_like_torch(amount)
        self.amount = amount

    def scores(self, t: Tensor, alive: Tensor | None) -> Tensor:
        """Score every entry of ``t`` (same shape); the lowest alive scores are pruned first.

        ``alive`` is a bool mask of the entries still unpruned (``None``: all);
        scores of dead entries are ignored.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement scores(t, alive)")

    def scores_into(self, values: Tensor, out: Tensor) -> Tensor:
        """Scores of a flat slice of entries (for ``elementwise_scores``); may write into ``out``.

        ``out`` is a reusable float buffer of the slice's size. The default
        ignores it and returns ``scores(values, None)``.
        """
        return self.scores(values, None)

    def score_window(self, k: int, total: int) -> tuple[float, float] | None:
        """Bounds likely to hold the k-th lowest of ``total`` scores, if their distribution is known.

        A good guess saves the selectors a sampling pass; a wrong one only
        costs a wider pass (the result is exact either way). Default: no guess.
        """
        return None

    def prepare_global(self, dtypes: list[torch.dtype]) -> None:
        """Called once before scoring targets of these dtypes together (:func:`pruneplug.prune_global`).

        torch's global pruning concatenates the targets, promoting them to one
        dtype; a strategy whose scores depend on that dtype (random draws do)
        can follow it here. Default: nothing.
        """

    def score_rewinder(self, device: torch.device) -> Callable[[], None] | None:
        """For scores that consume randomness: a function restarting the stream (see RandomUnstructured)."""
        return None

    def score_source(self, t: Tensor, alive: Tensor | None) -> ScoreSource:
        """How the selectors read this strategy's scores of ``t``."""
        t = t.detach()
        if self.elementwise_scores:
            return ScoreSource.elementwise(t, self.scores_into, alive)
        # (scores() gets a plain mask, unpacked for the read; the source keeps a packed one packed)
        return ScoreSource.whole(lambda: self.scores(t, _plain(alive)), t.numel(), t.device, alive)

    def _keep(self, t: Tensor, alive: Tensor | None) -> Tensor:
        """Bool mask shaped like ``t``: the alive entries left after pruning ``amount`` of them."""
        available = t.numel() if alive is None else int(alive.count_nonzero())
        count = count_to_prune(self.amount, available)
        if count == 0:
            return torch.ones(t.shape, dtype=torch.bool, device=t.device) if alive is None else alive.clone()
        source = self.score_source(t, alive)
        return keep_highest_across([source], count, guess=self.score_window)[0].reshape(t.shape)

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        """``default_mask`` with the ``amount`` lowest-scoring entries of ``t`` zeroed.

        As in torch, the entries are ranked over all of ``t``; pruning again
        through the core ranks only the still-unpruned ones.
        """
        keep = self._keep(t, None)
        if default_mask.dtype == torch.bool:
            return default_mask & keep
        return default_mask.mul(keep).contiguous()

    _own_compute_mask = compute_mask


class StructuredStrategy(BasePruningMethod):
    """Prune the ``amount`` lowest-scoring still-alive slices along ``dim``.

    Subclasses implement :meth:`slice_scores`.
    """

    PRUNING_TYPE: ClassVar[str] = "structured"
    Params: ClassVar[type[StrategyParams]] = StructuredParams

    def __init__(self, amount: int | float, dim: int = -1, *, prune_bias: bool = False) -> None:
        check_amount_like_torch(amount)
        self.amount = amount
        self.dim = dim
        self.prune_bias = prune_bias

    def slice_scores(self, t: Tensor, dim: int, alive: Tensor | None) -> Tensor:
        """One score per slice of ``t`` along ``dim`` (1-D); the lowest alive are pruned first."""
        raise NotImplementedError(f"{type(self).__name__} must implement slice_scores(t, dim, alive)")

    def _pruned_slices(self, t: Tensor, alive: Tensor | None) -> Tensor:
        """Bool vector over ``dim``: the slices to prune now, among ``alive``."""
        dim = normalize_dim(self.dim, t.dim())
        available = t.shape[dim] if alive is None else int(alive.count_nonzero())
        count = count_to_prune(self.amount, available, unit=f"slices along dim {dim}")
        if count == 0:
            return torch.zeros(t.shape[dim], dtype=torch.bool, device=t.device)
        scores = self.slice_scores(t.detach(), dim, alive)
        return select_lowest_slices(scores, count, alive).to(t.device)

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        """``default_mask`` with the ``amount`` lowest-scoring slices of ``t`` zeroed."""
        pruned = self._pruned_slices(t, None)
        if not bool(pruned.any()):
            return default_mask  # torch returns the default mask itself when nothing is pruned
        dim = normalize_dim(self.dim, t.dim())
        shape = [1] * t.dim()
        shape[dim] = -1
        out_dtype = torch.bool if default_mask.dtype == torch.bool else t.dtype
        keep = (~pruned).reshape(shape).expand(t.shape).to(out_dtype)
        return keep * default_mask.to(out_dtype)

    _own_compute_mask = compute_mask


def _plain(alive: Tensor | None) -> Tensor | None:
    return None if alive is None else plain(alive)
