"""Exact selection of the k lowest scores: one tensor, slices of it, or many tensors.

Every strategy that ranks entries ends here. The contract is exact: exactly
``k`` entries are selected, only among the *alive* ones (not yet pruned), the
lowest scores first; among equal scores the earliest position (row-major,
then target order) goes first, so ties never make a threshold prune more or
less than asked. NaN scores rank as ``+inf`` (pruned last).

No ``topk`` and no full sort: the k-th value is found by sampling a window
around it, counting what lies below the window and selecting inside the
(small) window, streaming source by source. Nothing is concatenated across
tensors, so global selection over a whole model needs memory for one tensor's
scores at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ScoreSource", "select_lowest", "select_lowest_across", "select_lowest_slices"]

#: Below this many alive entries the exact k-th value is taken directly.
_DIRECT_LIMIT = 1 << 20
#: Size of the sample used to place the window around the k-th value.
_SAMPLE_SIZE = 1 << 16


@dataclass(frozen=True)
class ScoreSource:
    """One tensor's scores, computed on demand so they need not all be held at once.

    Attributes:
        scores: returns a float tensor of scores (any shape); called up to twice.
        alive: bool tensor of the same number of entries (``True`` = may be
            selected), or ``None`` when every entry is alive.
        numel: number of entries.
        device: where the scores (and the returned mask) live.
    """

    scores: Callable[[], Tensor]
    alive: Tensor | None
    numel: int
    device: torch.device


def _comparable(scores: Tensor) -> Tensor:
    """Scores as a flat float tensor in which NaN ranks as ``+inf``."""
    flat = scores.reshape(-1)
    if not flat.is_floating_point():
        flat = flat.to(torch.float64 if flat.element_size() > 4 else torch.float32)
    elif flat.dtype in (torch.float16, torch.bfloat16):
        flat = flat.float()  # exact, and kthvalue/compare are fastest in fp32
    if flat.is_floating_point() and bool(torch.isnan(flat).any()):
        flat = torch.nan_to_num(flat, nan=math.inf, posinf=math.inf, neginf=-math.inf)
    return flat


def _alive_count(source: ScoreSource) -> int:
    if source.alive is None:
        return source.numel
    return int(source.alive.count_nonzero())


def _alive_values(values: Tensor, alive: Tensor | None) -> Tensor:
    if alive is None:
        return values
    return values[alive.reshape(-1)]


def _kth(values: Tensor, k: int) -> float:
    """The k-th smallest value (1-based) of a flat tensor."""
    return float(torch.kthvalue(values.cpu() if values.device.type == "mps" else values, k).values)


class _Reader:
    """Reads each source's scores, pass after pass.

    One source's scores are computed once and kept. Several sources' scores are
    recomputed on each pass (so only one is held at a time); ``rewind`` is
    called before every pass after the first, for scores that draw random
    numbers and must draw the same ones again.
    """

    def __init__(self, sources: Sequence[ScoreSource], rewind: Callable[[], None] | None) -> None:
        self.sources = sources
        self.rewind = rewind
        self.kept: Tensor | None = None
        self.passes = 0

    def new_pass(self) -> None:
        if self.passes and self.rewind is not None and len(self.sources) > 1:
            self.rewind()
        self.passes += 1

    def values(self, index: int) -> Tensor:
        if self.kept is not None:
            return self.kept
        source = self.sources[index]
        values = _comparable(source.scores())
        if values.numel() != source.numel:
            raise ValueError(f"scores have {values.numel()} entries, expected {source.numel}")
        if len(self.sources) == 1:
            self.kept = values
        return values


def _threshold(reader: _Reader, k: int, total: int) -> tuple[float, int]:
    """Return ``(T, below)``: the k-th lowest alive score and how many alive scores are < T."""
    sources = reader.sources
    if total <= _DIRECT_LIMIT:
        reader.new_pass()
        pooled = torch.cat(
            [_alive_values(reader.values(i), s.alive).to(torch.float64).cpu() for i, s in enumerate(sources)]
        )
        threshold = _kth(pooled, k)
        return threshold, int((pooled < threshold).sum())
    lo, hi = _window(reader, k, total)
    for _attempt in range(3):
        reader.new_pass()
        below = 0
        inside: list[Tensor] = []
        for i, source in enumerate(sources):
            values = reader.values(i)
            alive = None if source.alive is None else source.alive.reshape(-1)
            lt = values < lo
            window = (values <= hi) & ~lt
            if alive is not None:
                lt &= alive
                window &= alive
            below += int(lt.count_nonzero())
            inside.append(values[window].to(torch.float64).cpu())
        pooled = torch.cat(inside)
        if below < k <= below + pooled.numel():
            threshold = _kth(pooled, k - below)
            return threshold, below + int((pooled < threshold).sum())
        # The sample misplaced the window (rare): widen it towards the side that missed.
        if below >= k:
            lo, hi = -math.inf, lo
        else:
            lo, hi = hi, math.inf
    raise AssertionError("unreachable: the last window spans every value")  # pragma: no cover


def _window(reader: _Reader, k: int, total: int) -> tuple[float, float]:
    """Bounds that contain the k-th lowest alive score with overwhelming probability."""
    sources = reader.sources
    reader.new_pass()
    samples = []
    for i, source in enumerate(sources):
        share = max(1, round(_SAMPLE_SIZE * source.numel / max(1, sum(s.numel for s in sources))))
        stride = max(1, source.numel // share)
        values = reader.values(i)[::stride]
        if source.alive is not None:
            values = values[source.alive.reshape(-1)[::stride]]
        samples.append(values.to(torch.float64).cpu())
    sample = torch.cat(samples)
    if sample.numel() == 0:
        return -math.inf, math.inf
    rank = k / total * sample.numel()
    # A strided sample's rank error is ~sqrt(n); eight of those is a wide margin.
    margin = 8.0 * math.sqrt(sample.numel()) + 16.0
    low_rank = math.floor(rank - margin)
    high_rank = math.ceil(rank + margin)
    lo = -math.inf if low_rank < 1 else _kth(sample, low_rank)
    hi = math.inf if high_rank > sample.numel() else _kth(sample, high_rank)
    return lo, hi


def select_lowest_across(
    sources: Sequence[ScoreSource], k: int, *, rewind: Callable[[], None] | None = None
) -> list[Tensor]:
    """Select the ``k`` lowest alive scores across all sources together.

    Returns one flat bool tensor per source (``True`` = selected). Ties at the
    threshold are taken in order: earlier sources first, then earlier positions.
    ``rewind`` restarts random scores between passes (see :class:`_Reader`).

    >>> cpu = torch.device("cpu")
    >>> a = ScoreSource(lambda: torch.tensor([3.0, 1.0, 2.0]), None, 3, cpu)
    >>> b = ScoreSource(lambda: torch.tensor([1.0, 5.0]), None, 2, cpu)
    >>> [m.tolist() for m in select_lowest_across([a, b], 2)]
    [[False, True, False], [True, False]]
    """
    total = sum(_alive_count(s) for s in sources)
    if not 0 <= k <= total:
        raise ValueError(f"cannot select {k} of {total} alive entries")
    if k == 0:
        return [torch.zeros(s.numel, dtype=torch.bool, device=s.device) for s in sources]
    if k == total:
        return [
            torch.ones(s.numel, dtype=torch.bool, device=s.device) if s.alive is None else s.alive.reshape(-1).clone()
            for s in sources
        ]
    reader = _Reader(sources, rewind)
    threshold, below = _threshold(reader, k, total)
    ties_left = k - below
    masks = []
    reader.new_pass()
    for i, source in enumerate(sources):
        values = reader.values(i)
        alive = None if source.alive is None else source.alive.reshape(-1)
        selected = values < threshold
        if alive is not None:
            selected &= alive
        if ties_left > 0:
            ties = values == threshold
            if alive is not None:
                ties &= alive
            positions = ties.nonzero().reshape(-1)[:ties_left]
            selected[positions] = True
            ties_left -= positions.numel()
        masks.append(selected)
    return masks


def select_lowest(scores: Tensor, k: int, alive: Tensor | None = None) -> Tensor:
    """Bool mask of the ``k`` lowest scores among the alive entries, shaped like ``scores``.

    >>> select_lowest(torch.tensor([[4.0, 1.0], [1.0, 3.0]]), 2).tolist()
    [[False, True], [True, False]]
    >>> select_lowest(torch.tensor([2.0, 2.0, 2.0]), 2).tolist()  # ties: earliest first
    [True, True, False]
    """
    source = ScoreSource(lambda: scores, alive, scores.numel(), scores.device)
    return select_lowest_across([source], k)[0].reshape(scores.shape)


def select_lowest_slices(slice_scores: Tensor, k: int, alive: Tensor | None = None) -> Tensor:
    """Bool mask over slices (1-D): the ``k`` lowest-scoring alive slices.

    Slices are few (channels, rows), so a stable sort is both exact and cheap.

    >>> select_lowest_slices(torch.tensor([0.5, 0.1, 0.9, 0.1]), 2).tolist()
    [False, True, False, True]
    """
    flat = _comparable(slice_scores).cpu()
    candidates = torch.arange(flat.numel()) if alive is None else alive.reshape(-1).cpu().nonzero().reshape(-1)
    if not 0 <= k <= candidates.numel():
        raise ValueError(f"cannot select {k} of {candidates.numel()} alive slices")
    order = torch.sort(flat[candidates], stable=True).indices[:k]
    selected = torch.zeros(flat.numel(), dtype=torch.bool)
    selected[candidates[order]] = True
    return selected.to(slice_scores.device)
