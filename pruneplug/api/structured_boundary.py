"""One process's choice of slices from L``n`` norms combined from the ranks' parts of each slice.

When a DTensor is sharded along a dim other than the pruned one, each rank
holds a part of every slice, and the norm of a slice is combined from the
ranks' sums of ``|x|^n`` (float64). One process computes the same norm from
the whole slice in the tensor's own dtype, and the two can differ in their
last bits, so two slices whose norms are that close could be ordered
differently. This module makes the choice exactly one process's anyway:

1. from the float64 sum ``S`` of each slice it derives an interval that
   surely holds one process's norm (any order of float additions of ``M``
   terms errs by at most ``(M - 1) u S``; a margin of twice that, plus the
   rounding of ``|x|^n`` and of the last power, plus underflow);
2. it chooses by the combined norms; if every chosen slice's interval lies
   below every unchosen alive slice's, that is one process's choice;
3. otherwise only the slices whose intervals straddle the boundary are in
   doubt: their parts are gathered to every rank (``|A| * M`` entries) and
   scored as one process scores them, and the remaining places go to the
   lowest of them (stable: ties to the lower index, as in one process).

Ties (equal norms, as of integer-valued weights or slices that are
permutations of each other) always take step 3, for the tied slices only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..selection.exact import select_lowest_slices

__all__ = ["norm_bounds", "settle_lowest_slices"]


def norm_bounds(sums: Tensor, order: float, per_slice: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Per slice, ``(low, high)`` bounds (float64) of the norm one process computes in ``dtype``.

    ``sums``: float64 sums of ``|x|^order`` over each slice's ``per_slice``
    entries; ``order`` finite and not 0.
    """
    finfo = torch.finfo(dtype)
    # torch accumulates 16-bit floats in float32 and rounds the norm to the dtype once, at the end.
    accumulated = torch.finfo(torch.float32) if finfo.bits < 32 else finfo
    unit = accumulated.eps  # (twice the unit roundoff: a margin of 2 on every rounding)
    relative = (per_slice + 8) * unit
    floor = per_slice * accumulated.tiny  # (terms that underflow to subnormals or to 0)
    low_sum = (sums * (1 - relative) - floor).clamp(min=0)
    high_sum = sums * (1 + relative) + floor
    ends = torch.stack([low_sum.pow(1.0 / order), high_sum.pow(1.0 / order)])  # (a negative order swaps the ends)
    rounding = (1 + unit) * (1 + finfo.eps) - 1  # (the last power, then the cast to the dtype)
    low = ends.amin(dim=0) * (1 - rounding)
    high = ends.amax(dim=0) * (1 + rounding)
    return low, high.masked_fill(high > finfo.max, float("inf"))


def settle_lowest_slices(
    approximate: Tensor,
    low: Tensor,
    high: Tensor,
    count: int,
    alive: Tensor | None,
    exact_scores: Callable[[Tensor], Tensor],
) -> tuple[Tensor, Tensor]:
    """The ``count`` lowest alive slices by one process's norms (bool over slices), and the indices scored exactly.

    ``approximate``, ``low``, ``high``: per slice, the combined norm and
    bounds of one process's (float64). ``exact_scores(indices)``: one
    process's scores of those slices (a collective: every rank calls it
    with the same indices, since the combined norms are the same on every
    rank). It is called at most once, and not at all when no interval
    straddles the boundary.
    """
    chosen = select_lowest_slices(approximate, count, alive)
    candidates = torch.ones_like(chosen) if alive is None else alive.reshape(-1).cpu().bool()
    unchosen = candidates & ~chosen
    if count == 0 or not bool(unchosen.any()):
        return chosen, torch.empty(0, dtype=torch.int64)
    top = high[chosen].max()
    bottom = low[unchosen].min()
    if bool(top < bottom):
        return chosen, torch.empty(0, dtype=torch.int64)
    doubtful = (chosen & (high >= bottom)) | (unchosen & (low <= top))
    indices = doubtful.nonzero().reshape(-1)
    sure = chosen & ~doubtful
    scores = exact_scores(indices)
    picked = select_lowest_slices(scores, count - int(sure.count_nonzero()))
    settled = sure.clone()
    settled[indices[picked.cpu()]] = True
    return settled, indices
