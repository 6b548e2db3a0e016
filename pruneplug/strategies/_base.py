"""Strategies that score entries or slices and let pruneplug's selectors pick.

Most strategies are *how to score* plus *how to pick*. Subclass
:class:`UnstructuredStrategy` and implement :meth:`~UnstructuredStrategy.scores`
(lowest scores are pruned first), or :class:`StructuredStrategy` and implement
:meth:`~StructuredStrategy.slice_scores`; the exact, tie-safe selection, the
``amount`` rules, iterative pruning and global pruning across tensors come
for free and run on the fast selection code. Entries (slices) a strategy must
never prune it names in :meth:`~UnstructuredStrategy.protected`
(:meth:`~StructuredStrategy.protected_slices`); the selection leaves them
out, locally, iteratively and globally. A strategy whose ``amount`` counts
within each row of the tensor rather than over all of it says so by
implementing :class:`CountsPerRow`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Protocol, runtime_checkable

import torch
from pydantic import StrictBool
from torch import Tensor

from ..core.hook import method_name
from ..core.method import BasePruningMethod
from ..errors import InvalidMaskError
from ..params import AmountField, DimField, StrategyParams
from ..selection.amount import check_amount_like_torch, count_to_prune
from ..selection.exact import ScoreSource, keep_highest_across, select_lowest_slices
from ..selection.slices import normalize_dim
from ..storage.packed import plain

__all__ = [
    "AmountParams",
    "CountsPerRow",
    "StructuredParams",
    "UnstructuredStrategy",
    "StructuredStrategy",
    "checked_protected",
    "checked_protected_slices",
]


class AmountParams(StrategyParams):
    """Parameters of a strategy that prunes an ``amount``."""

    amount: AmountField


class StructuredParams(AmountParams):
    """Parameters of a structured strategy: ``amount`` counts slices along ``dim``."""

    dim: DimField = -1
    prune_bias: StrictBool = False


@runtime_checkable
class CountsPerRow(Protocol):
    """An unstructured strategy whose ``amount`` may count within each row of the tensor, not over all of it.

    ``wanda`` and ``magnitude`` with ``compare="row"`` prune ``amount`` of the
    still-unpruned entries of every output row on its own (an int is a count
    per row, a float a fraction of each row's unpruned entries, rounded as
    torch rounds). :meth:`row_dim` says whether the configured instance does
    and along which dim its rows run; the conformance kit
    (:mod:`pruneplug.testing`) then checks its counts row by row instead of
    over the tensor.
    """

    def row_dim(self, t: Tensor) -> int | None:
        """The dim along which the rows of ``t`` run (each row a 1-D slice), or ``None``: ``amount`` counts over ``t``.

        Each row prunes ``amount`` of its own still-unpruned entries. Called
        like ``compute_mask``: :func:`pruneplug.current_target` names the
        module being pruned, if any (a linear layer's rows run along its input
        dim, which depends on the layer's class). The answer may depend on the
        parameters (``compare``) but not on ``amount``.
        """
        ...


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

        ``t`` is the whole tensor being ranked -- its values, or the user's
        importance scores -- in its own shape. ``alive`` is a bool mask of
        ``t``'s shape: the entries that may be pruned now, i.e. still unpruned
        and not :meth:`protected` (``None``: all). Scores elsewhere are ignored,
        and so are the values there (a pruned entry may hold 0 or its original value).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement scores(t, alive)")

    def protected(self, t: Tensor) -> Tensor | None:
        """The entries of ``t`` never to be pruned: a bool tensor of ``t``'s shape on its device, or ``None``.

        ``t`` is what :meth:`scores` ranks (the tensor's values or importance
        scores, whole). Protected entries are never selected, whatever their
        score and however large ``amount`` is: an amount that would need them
        raises :class:`~pruneplug.InvalidAmountError`. The result must not
        depend on ``amount``. Default: ``None`` (nothing protected, at no cost).
        """
        return None

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

    def global_refusal(self) -> str | None:
        """Why this configured instance cannot rank entries across tensors, or ``None`` if it can.

        :func:`pruneplug.prune_global` raises
        :class:`~pruneplug.IncompatibleStrategyError` with this text: for a
        strategy whose parameters make its selection a rule within one tensor
        (per row, per N:M group), say so and what to pass instead. Default: ``None``.
        """
        return None

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

    @classmethod
    def selects_itself(cls) -> bool:
        """Whether :meth:`keep_entries` stands for ``compute_mask`` (the :class:`~pruneplug.SelectsEntries` contract).

        ``True`` unless a subclass (or a test's ``mock.patch``) replaced
        :meth:`compute_mask`: then the core calls that replacement instead.
        """
        return cls.compute_mask is _UNSTRUCTURED_COMPUTE_MASK

    def keep_entries(self, t: Tensor, alive: Tensor | None) -> Tensor:
        """Bool mask shaped like ``t``: the alive entries left after pruning ``amount`` of them.

        ``alive`` (``None``: all entries) are the still-unpruned entries; the
        core and :func:`pruneplug.prune_global` call this directly instead of
        ranking a copy of ``t[alive]`` (see :class:`~pruneplug.SelectsEntries`).
        """
        available = t.numel() if alive is None else int(alive.count_nonzero())
        guard = checked_protected(self, t)
        if guard is None:
            count = count_to_prune(self.amount, available)
            candidates = alive
        else:
            kept = guard if alive is None else guard & plain(alive)  # protected and still unpruned
            count = count_to_prune(
                self.amount, available, protected=int(kept.count_nonzero()), strategy=method_name(self)
            )
            candidates = ~guard if alive is None else plain(alive) & ~guard
        if count == 0:
            return torch.ones(t.shape, dtype=torch.bool, device=t.device) if alive is None else alive.clone()
        source = self.score_source(t, candidates)
        keep = keep_highest_across([source], count, guess=self.score_window)[0].reshape(t.shape)
        return keep if guard is None else keep | kept

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        """``default_mask`` with the ``amount`` lowest-scoring entries of ``t`` zeroed.

        As in torch, the entries are ranked over all of ``t``; pruning again
        through the core ranks only the still-unpruned ones.
        """
        keep = self.keep_entries(t, None)
        if default_mask.dtype == torch.bool:
            return default_mask & keep
        return default_mask.mul(keep).contiguous()


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
        """One score per slice of ``t`` along ``dim`` (1-D); the lowest alive are pruned first.

        ``alive`` is a 1-D bool over ``dim``: the slices that may be pruned now
        (still unpruned and not :meth:`protected_slices`; ``None``: all).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement slice_scores(t, dim, alive)")

    def protected_slices(self, t: Tensor, dim: int) -> Tensor | None:
        """The slices of ``t`` along ``dim`` never to be pruned: a 1-D bool on ``t``'s device, or ``None``.

        As :meth:`UnstructuredStrategy.protected`, over slices. Default: ``None``.
        """
        return None

    @classmethod
    def selects_itself(cls) -> bool:
        """Whether :meth:`pruned_slices` stands for ``compute_mask`` (the :class:`~pruneplug.SelectsSlices` contract).

        ``True`` unless a subclass (or a test's ``mock.patch``) replaced :meth:`compute_mask`.
        """
        return cls.compute_mask is _STRUCTURED_COMPUTE_MASK

    def pruned_slices(self, t: Tensor, alive: Tensor | None) -> Tensor:
        """Bool vector over ``dim``: the slices to prune now, among the ``alive`` ones (``None``: all)."""
        dim = normalize_dim(self.dim, t.dim())
        available = t.shape[dim] if alive is None else int(alive.count_nonzero())
        unit = f"slices along dim {dim}"
        guard = checked_protected_slices(self, t, dim)
        if guard is None:
            count = count_to_prune(self.amount, available, unit=unit)
            candidates = alive
        else:
            kept = guard if alive is None else guard & alive
            count = count_to_prune(
                self.amount, available, unit=unit, protected=int(kept.count_nonzero()), strategy=method_name(self)
            )
            candidates = ~guard if alive is None else alive & ~guard
        if count == 0:
            return torch.zeros(t.shape[dim], dtype=torch.bool, device=t.device)
        scores = self.slice_scores(t.detach(), dim, candidates)
        return select_lowest_slices(scores, count, candidates).to(t.device)

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        """``default_mask`` with the ``amount`` lowest-scoring slices of ``t`` zeroed."""
        pruned = self.pruned_slices(t, None)
        if not bool(pruned.any()):
            return default_mask  # torch returns the default mask itself when nothing is pruned
        dim = normalize_dim(self.dim, t.dim())
        shape = [1] * t.dim()
        shape[dim] = -1
        out_dtype = torch.bool if default_mask.dtype == torch.bool else t.dtype
        keep = (~pruned).reshape(shape).expand(t.shape).to(out_dtype)
        return keep * default_mask.to(out_dtype)


# The functions as the classes define them: a later replacement (a subclass's, a test's mock.patch
# of the class attribute) is not one of these, and turns the shortcut off.
_UNSTRUCTURED_COMPUTE_MASK = UnstructuredStrategy.compute_mask
_STRUCTURED_COMPUTE_MASK = StructuredStrategy.compute_mask


def _plain(alive: Tensor | None) -> Tensor | None:
    return None if alive is None else plain(alive)


def checked_protected(method: UnstructuredStrategy, t: Tensor) -> Tensor | None:
    """``method.protected(t)``, checked (see :func:`_checked`)."""
    t = t.detach()
    return _checked(method.protected(t), tuple(t.shape), t.device, "protected(t)", method)


def checked_protected_slices(method: StructuredStrategy, t: Tensor, dim: int) -> Tensor | None:
    """``method.protected_slices(t, dim)``, checked (see :func:`_checked`)."""
    t = t.detach()
    call = f"protected_slices(t, dim={dim})"
    return _checked(method.protected_slices(t, dim), (t.shape[dim],), t.device, call, method)


def _checked(
    guard: object, shape: tuple[int, ...], device: torch.device, call: str, method: BasePruningMethod
) -> Tensor | None:
    """``guard`` if it is ``None`` or a bool tensor of ``shape`` on ``device``.

    Raises:
        InvalidMaskError: naming the strategy, the call and what it should return.
    """
    if guard is None:
        return None
    wanted = f"None or a torch.bool tensor of shape {shape} on {device}"
    if not isinstance(guard, Tensor):
        got = type(guard).__name__
    elif guard.dtype != torch.bool or tuple(guard.shape) != shape or guard.device != device:
        got = f"a {guard.dtype} tensor of shape {tuple(guard.shape)} on {guard.device}"
    else:
        return guard
    raise InvalidMaskError(f"{call} returned {got}; it must return {wanted}", strategy=method_name(method))
